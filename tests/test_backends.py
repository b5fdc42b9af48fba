"""The registry and its torch-free names, the class-level patch and its restore, parity
and provenance on CPU; the FA3/FA4 signatures against recorded kernel names."""

from __future__ import annotations

import pytest
import torch
from ultralytics.nn.modules.block import AAttn

from attnbench import backend_records, config
from attnbench.backends import parity, provenance, signatures
from attnbench.backends import registry as backends
from attnbench.backends.patch import use_backend

CPU = torch.device("cpu")
CPU_BACKENDS = ["eager", "sdpa", "sdpa_math", "sdpa_flash"]
CUDA_ONLY = ["sdpa_efficient", "sdpa_cudnn", "flash_attn"]


def _module(area: int) -> tuple[AAttn, torch.Tensor]:
    torch.manual_seed(0)
    return AAttn(64, 2, area=area), torch.randn(2, 64, 16, 16)


def test_every_entry_has_a_signature_per_device_it_supports():
    for backend in backends.REGISTRY.values():
        for device in backend.devices:
            assert device in backend.signatures, (backend.name, device)


def test_registry_schema_and_torch_free_records_agree():
    assert tuple(backends.REGISTRY) == backend_records.names()
    assert config.load_schema()["properties"]["backends"]["items"]["enum"] == list(
        backend_records.names()
    )
    for name, record in backend_records.RECORDS.items():
        entry = backends.REGISTRY[name]
        assert (entry.description, entry.package, entry.env, entry.flash_build) == (
            record.description, record.package, record.env, record.flash_build
        )  # fmt: skip
        assert entry.signatures is getattr(signatures, record.signature_ref)
    assert backend_records.conda_env_file("flash_attn") == "../envs/flash-attn.yaml"
    assert backend_records.conda_env_file("sdpa") == "../envs/torch.yaml"
    assert backend_records.conda_env_file("sdpa", "flash_attn") == "../envs/flash-attn.yaml"
    assert backend_records.flash_attn_input("flash_attn") == "results/env/flash_attn.json"
    assert backend_records.flash_attn_input("fa3") == []
    assert backend_records.flash_attn_input("eager", "flash_attn") == "results/env/flash_attn.json"


def test_backend_records_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, attnbench.backend_records, attnbench.config; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_forced_sdpa_kernels_are_selected_by_the_record_not_per_call():
    for name in ("sdpa_math", "sdpa_efficient", "sdpa_flash", "sdpa_cudnn", "fa3", "fa4"):
        entry = backends.REGISTRY[name]
        assert entry.fn is backends.sdpa_attention and entry.activate is not None, name
    q = torch.randn(1, 2, 16, 8)
    with torch.profiler.profile() as prof, backends.REGISTRY["sdpa_math"].context():
        backends.REGISTRY["sdpa_math"].fn(q, q, q)
    assert any(e.name == "aten::_scaled_dot_product_attention_math" for e in prof.events())


def _record(fwd_kernel: str, bwd_kernel: str) -> dict:
    return {
        "regions": 1,
        "fwd_ops": {"aten::_scaled_dot_product_flash_attention": 1},
        "fwd_kernels": {fwd_kernel: 1},
        "bwd_ops": {"ScaledDotProductFlashAttentionBackward0": 1},
        "bwd_kernels": {bwd_kernel: 1},
    }


# Kernel names as the profiler lists them (FA2: PyTorch's copy and Dao's flash-attn 2).
FA2_TORCH = _record(
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32>>",
    "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_params>",
)
FA2_DAO = _record(
    "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<32>>",
    "void flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_params>",
)
FA3_HOPPER = _record(
    "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<...>>>",
    "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnBwdSm90<...>>>",
)
FA4_CUTE = _record(
    "kernel_cutlass_kernel_flash_attncuteflash_fwd_sm100FlashAttentionForwardSm100_object_at_",
    "kernel_cutlass_kernel_flash_attncuteflash_bwd_sm100FlashAttentionBackwardSm100_object_at_",
)


@pytest.mark.parametrize(
    ("name", "own", "others"),
    [("fa3", FA3_HOPPER, [FA2_TORCH, FA2_DAO, FA4_CUTE]),
     ("fa4", FA4_CUTE, [FA2_TORCH, FA2_DAO, FA3_HOPPER])],
)  # fmt: skip
def test_fa3_and_fa4_need_their_own_kernels(name, own, others):
    signature = backends.get(name).signature("cuda")
    assert provenance.check(own, signature, "cuda") == []
    for record in others:
        assert provenance.check(record, signature, "cuda"), (name, record["fwd_kernels"])
    assert provenance.check(FA2_TORCH, signatures.SDPA_FLASH["cuda"], "cuda") == []


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_cpu_backends_are_available_in_fp32(name):
    assert backends.check(name, CPU, torch.float32) is None


@pytest.mark.parametrize("name", CUDA_ONLY)
def test_cuda_only_backends_say_why_on_cpu(name):
    reason = backends.check(name, CPU, torch.float32)
    assert reason and "CUDA" in reason and name in reason


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(backends.BackendUnavailableError, match="unknown backend 'fast'"):
        backends.get("fast")


def test_kernel_dtype_follows_amp_device_and_cast():
    cuda = torch.device("cuda")
    assert backends.kernel_dtype(cuda, amp=True) == torch.float16
    assert backends.kernel_dtype(cuda, amp=False) == torch.float32
    assert backends.kernel_dtype(CPU, amp=True) == torch.float32
    assert backends.kernel_dtype(cuda, amp=False, cast="bf16") == torch.bfloat16


@pytest.mark.parametrize("area", [1, 4])
def test_eager_patch_is_bit_identical_to_the_stock_forward(area):
    module, x = _module(area)
    reference = module(x)
    with use_backend("eager"):
        patched = module(x)
    assert torch.equal(patched, reference)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("area", [1, 4])
def test_patched_forward_matches_stock_forward_and_backward(name, area):
    module, x = _module(area)
    x.requires_grad_()
    reference = module(x)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), x)
    with use_backend(name) as active:
        out = module(x)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-4)
    assert active.dtypes_seen() == ["float32"]
    assert sum(active.calls.values()) == 1  # one forward call; backward never re-enters


def test_patch_is_restored_on_exit_and_on_error():
    original = AAttn.forward
    with use_backend("sdpa"):
        assert AAttn.forward is not original
    assert AAttn.forward is original
    with pytest.raises(ZeroDivisionError), use_backend("sdpa"):
        1 / 0  # noqa: B018
    assert AAttn.forward is original


def test_contexts_do_not_nest():
    with (
        use_backend("sdpa"),
        pytest.raises(RuntimeError, match="already active"),
        use_backend("eager"),
    ):
        pass


def test_half_only_kernel_refuses_fp32_without_cast():
    module, x = _module(4)
    flash = backends.REGISTRY["sdpa_flash"]
    assert backends.needs_cast(flash, torch.device("cuda"), torch.float32)
    assert not backends.needs_cast(flash, CPU, torch.float32)


def test_cast_is_applied_and_recorded():
    module, x = _module(4)
    with use_backend("sdpa_math", cast="bf16") as active:
        out = module(x)
    assert out.dtype == torch.float32
    assert active.dtypes_seen() == ["bfloat16"]
    assert next(iter(active.calls))[1] == "float32"  # what it was given


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_parity_against_float64_reference(name):
    shapes = [
        {"B": 8, "heads": 2, "N": 64, "head_dim": 32},
        {"B": 2, "heads": 4, "N": 100, "head_dim": 32},
    ]
    rows = parity.run(name, shapes, {"float32": 1e-4, "bfloat16": 3e-2}, CPU)
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok", row
        assert row["passed"] is True
        assert 0 < row["rel_err_out"] <= row["threshold"]
        assert set(parity.COLUMNS) == set(row)


def test_parity_catches_a_wrong_kernel(monkeypatch):
    wrong = backends.Backend(
        "wrong", "scaled wrongly", ("cpu",), "EAGER", fn=lambda q, k, v: (2 * v).transpose(1, 2)
    )
    errors = parity.check_shape(wrong, (2, 2, 16, 32), torch.float32, CPU)
    assert errors["rel_err_out"] > 0.5


def test_parity_reports_unavailable_backends_as_rows():
    rows = parity.run(
        "sdpa_cudnn", [{"B": 2, "heads": 2, "N": 16, "head_dim": 32}], {"float32": 1e-4}, CPU
    )
    assert rows[0]["status"] == "unavailable"
    assert "CUDA" in rows[0]["reason"]


def _profile(name: str, area: int = 1) -> dict:
    module, x = _module(area)
    x.requires_grad_()
    with use_backend(name):

        def step():
            module(x).sum().backward()

        return provenance.profile_steps(step, 2, CPU)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("eager", "eager (matmul + softmax)"),
        ("sdpa", "flash (cpu)"),
        ("sdpa_math", "math"),
        ("sdpa_flash", "flash (cpu)"),
    ],
)
def test_provenance_matches_each_cpu_backend(name, family):
    record = _profile(name)
    verdict = provenance.verify(record, backends.get(name).signature("cpu"), "cpu")
    assert verdict["matched"], verdict["mismatch"]
    assert verdict["dispatched"] == family
    assert record["regions"] == 2  # one attention call per step, 2 steps
    assert record["bwd_ops"], "backward ops were not linked to the attention"


def test_provenance_rejects_a_substituted_kernel():
    """The seed study's flaw: the math kernel running under the flash backend's name."""
    record = _profile("sdpa_math")
    problems = provenance.check(record, backends.get("sdpa_flash").signature("cpu"), "cpu")
    assert any("flash_attention_for_cpu" in p for p in problems)
    assert any("forbidden" in p for p in problems)


def test_provenance_without_the_patch_finds_no_attention():
    module, x = _module(1)
    record = provenance.profile_steps(lambda: module(x).sum().backward(), 1, CPU)
    problems = provenance.check(record, backends.get("eager").signature("cpu"), "cpu")
    assert problems and "no attention call" in problems[0]
