"""A backend is one record: a record added to the table (and nothing else) reaches the
config check, the schema's backend lists, the cost model, provenance's labels, the rules'
env helpers and the registry."""

from __future__ import annotations

import dataclasses

import pytest

from attnbench import backend_records
from attnbench import config as cfg
from attnbench.errors import ConfigError
from attnbench.sweep import cost as sweep_cost
from attnbench.sweep import plan as sweep

FAKE = backend_records.BackendRecord(
    "fake_math", "a made-up backend: SDPA's math kernel under another name", ("cpu", "cuda"),
    "SDPA_MATH", sdpa_kernel="MATH", materializes_scores=True, env="fake-env",
    kernel=((r"aten::_fake_attention", "fake"),),
)  # fmt: skip


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(backend_records.RECORDS, FAKE.name, FAKE)
    lean = dataclasses.replace(FAKE, name="fake_fused", materializes_scores=False, env="torch")
    monkeypatch.setitem(backend_records.RECORDS, lean.name, lean)
    return FAKE


def test_config_and_schema_take_the_new_record(fake):
    config = cfg.validate({"backends": ["eager", fake.name]})
    assert config["backends"] == ["eager", fake.name]
    schema = cfg.load_schema()
    assert fake.name in schema["properties"]["backends"]["items"]["enum"]
    sweep_items = schema["properties"]["sweep"]["properties"]["backends"]["items"]
    assert fake.name in sweep_items["enum"]
    with pytest.raises(ConfigError, match=r"backends\.1 = \"nope\".*allowed: .*fake_math"):
        cfg.validate({"backends": ["eager", "nope"]})


def test_unknown_names_fail_in_one_line_with_the_valid_ones(fake):
    with pytest.raises(
        ConfigError, match="unknown backend 'nope': choose one of eager, .*fake_math"
    ):
        backend_records.record("nope")


def test_cost_model_reads_the_memory_class_from_the_record(fake):
    def max_batch_s(backend: str) -> float:
        config = cfg.validate(
            {"sweep": {"enabled": True, "backends": ["eager", backend], "find_max_batch": True}}
        )
        return sweep_cost.estimate(sweep.plan(config), config["train"])["max_batch_s"]

    assert max_batch_s(fake.name) == pytest.approx(max_batch_s("sdpa_math"))
    assert max_batch_s("fake_fused") == pytest.approx(max_batch_s("sdpa"))
    assert max_batch_s(fake.name) != pytest.approx(max_batch_s("fake_fused"))


def test_provenance_labels_and_env_helpers_take_the_new_record(fake):
    from attnbench.backends import provenance

    record = {"fwd_ops": {"aten::_fake_attention": 2}, "fwd_kernels": {}}
    assert provenance.dispatched(record) == "fake"
    assert backend_records.conda_env_file(fake.name) == "../envs/fake-env.yaml"
    assert backend_records.conda_env_file("eager", fake.name) == "../envs/fake-env.yaml"
    with pytest.raises(ConfigError, match="different conda envs"):
        backend_records.conda_env_file("flash_attn", fake.name)
    assert backend_records.flash_attn_input(fake.name) == []


def test_registry_resolves_the_new_record(fake):
    from attnbench.backends import registry, signatures

    backend = registry.get(fake.name)
    assert backend.fn is registry.sdpa_attention and backend.activate is not None
    assert backend.signatures is signatures.SDPA_MATH and backend.materializes_scores
    assert registry.check(fake.name, registry.torch.device("cpu"), registry.torch.float32) is None
    registry.REGISTRY.pop(fake.name)
