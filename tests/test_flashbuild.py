"""flashbuild's decisions (archs, jobs, slim flags, local version), its unavailable and
cached paths; wheelbuild's sdist lookup and log streaming; activation; a real build only
on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from attnbench import host
from attnbench.env import flashbuild, wheelbuild
from attnbench.errors import UserError

SETTINGS = {"build": "auto", "version": "2.8.3.post2", "slim": True, "cuda_archs": "auto",
            "max_jobs": "auto"}  # fmt: skip
GIB = 2**30


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([(9, 0)], "90"),
        ([(8, 0)], "80"),
        ([(8, 6)], "80"),  # sm_80 code runs on sm_86/sm_89; setup.py has no "86" target
        ([(8, 9), (9, 0), (9, 0)], "80;90"),
        ([(12, 0), (10, 0)], "100;120"),
    ],
)
def test_arch_string_from_compute_capabilities(capabilities, expected):
    assert flashbuild.cuda_archs(capabilities) == expected


@pytest.mark.parametrize(("capability", "words"), [((7, 5), "8.0 (Ampere)"), ((11, 0), "no flash")])
def test_unsupported_capabilities_say_why(capability, words):
    with pytest.raises(flashbuild.BuildUnavailableError, match=r"compute capability") as info:
        flashbuild.cuda_archs([capability])
    assert words in str(info.value)


def test_no_gpu_means_no_archs():
    with pytest.raises(flashbuild.BuildUnavailableError, match="no CUDA GPU"):
        flashbuild.cuda_archs([])


def test_torch_arch_list_matches():
    assert flashbuild.torch_arch_list("80;90") == "8.0;9.0"
    assert flashbuild.torch_arch_list("120") == "12.0"


@pytest.mark.parametrize(
    ("cores", "mem_gib", "archs", "expected"),
    [
        (16, 128, "90", 16),  # the H100 host: cores bound
        (16, 16, "90", 5),  # memory bound: 16 * 0.8 / 2.5
        (64, 512, "80;90", 32),  # two archs: 2 nvcc threads per job
        (1, 1, "90", 1),  # never below one
        (8, 512, "80;90;100;120", 2),  # four targets: 4 threads per job
    ],
)
def test_max_jobs_from_cores_and_memory(cores, mem_gib, archs, expected):
    assert flashbuild.max_jobs(cores, mem_gib * GIB, archs) == expected


def test_nvcc_threads_follow_the_number_of_targets():
    assert flashbuild.nvcc_threads("90") == 1
    assert flashbuild.nvcc_threads("80;90;100;120") == 4


def test_slim_flags_and_local_version():
    flags = flashbuild.slim_flags(True)
    assert flags == [f"-D{m}" for m in flashbuild.SLIM_MACROS] and len(flags) == 5
    assert "-DFLASHATTENTION_DISABLE_UNEVEN_K" in flags
    assert flashbuild.slim_flags(False) == []
    assert (
        flashbuild.local_version("90", True, "2.11.0+cu130", "13.0") == "cu130.torch2.11.sm90.slim"
    )
    assert (
        flashbuild.local_version("80;90", False, "2.10.1", "12.9")
        == "cu129.torch2.10.sm80.sm90.full"
    )


def test_build_environment_forces_a_local_slim_build():
    base = {"PATH": "/usr/bin", "CPPFLAGS": "-I/opt/include"}
    env = flashbuild.build_environment(base, "90", 12, True, "cu130.torch2.11.sm90.slim")
    assert env["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"
    assert env["FLASH_ATTN_CUDA_ARCHS"] == "90" and env["TORCH_CUDA_ARCH_LIST"] == "9.0"
    assert env["MAX_JOBS"] == "12" and env["NVCC_THREADS"] == "1"
    assert env["FLASH_ATTN_LOCAL_VERSION"] == "cu130.torch2.11.sm90.slim"
    for macro in flashbuild.SLIM_MACROS:
        assert f"-D{macro}" in env["NVCC_APPEND_FLAGS"]  # nvcc: the kernels
        assert f"-D{macro}" in env["CPPFLAGS"]  # g++: flash_api.cpp refuses what is compiled out
    assert env["CPPFLAGS"].startswith("-I/opt/include ")
    assert base == {"PATH": "/usr/bin", "CPPFLAGS": "-I/opt/include"}  # not mutated
    full = flashbuild.build_environment(base, "90", 12, False, "x")
    assert "NVCC_APPEND_FLAGS" not in full and full["CPPFLAGS"] == "-I/opt/include"


def test_cuda_home_is_a_toolkit_with_headers_not_a_wrappers_folder(tmp_path):
    wrapper = tmp_path / "usr" / "bin" / "nvcc"  # like /usr/local/bin/nvcc -> exec the real one
    toolkit = tmp_path / "cuda-13.0"
    for path in (wrapper, toolkit / "bin" / "nvcc", toolkit / "include" / "cuda_runtime.h"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert host.find_cuda_home(str(wrapper), {"CUDA_HOME": str(toolkit)}) == toolkit
    assert host.find_cuda_home(str(toolkit / "bin" / "nvcc"), {}) == toolkit
    env = flashbuild.build_environment({"PATH": "/usr/bin"}, "90", 1, False, "x", toolkit)
    assert env["CUDA_HOME"] == str(toolkit) and env["PATH"] == f"{toolkit}/bin:/usr/bin"


def _no_gpu(monkeypatch):
    monkeypatch.setattr(host, "gpu_capabilities", lambda: [])


def test_without_nvcc_writes_unavailable_and_does_not_fail(tmp_path, monkeypatch):
    monkeypatch.setattr("attnbench.host.find_nvcc", lambda environ=None: None)
    _no_gpu(monkeypatch)
    status_path = tmp_path / "env" / "flash_attn.json"
    status = flashbuild.run(SETTINGS, status_path, cores=2)
    written = json.loads(status_path.read_text())
    assert written == status
    assert status["status"] == "unavailable"
    assert "nvcc not found" in status["reason"] and "no CUDA GPU" in status["reason"]
    assert status["version"] == "2.8.3.post2" and status["slim"] is True
    for key in ("wheel", "site", "build_seconds", "wheel_bytes", "cuda_archs", "nvcc"):
        assert key in status
    assert not (tmp_path / "env" / "wheels").exists()


def test_old_gpu_is_unavailable_with_the_capability(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "gpu_capabilities", lambda: [(7, 5)])
    status = flashbuild.run(SETTINGS, tmp_path / "flash_attn.json", cores=2)
    assert status["status"] == "unavailable" and "7.5" in status["reason"]


def test_explicit_archs_must_cover_the_gpu(monkeypatch):
    monkeypatch.setattr(host, "gpu_capabilities", lambda: [(9, 0)])
    reason, _ = flashbuild.prerequisites("80")
    assert reason and "does not cover this GPU" in reason


def test_build_never_records_whether_flash_attn_is_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(flashbuild.importlib.util, "find_spec", lambda name: None)
    status = flashbuild.run({**SETTINGS, "build": "never"}, tmp_path / "f.json")
    assert status["status"] == "unavailable" and "build = never" in status["reason"]

    monkeypatch.setattr(flashbuild.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(flashbuild.importlib.metadata, "version", lambda name: "2.8.3")
    status = flashbuild.run({**SETTINGS, "build": "never"}, tmp_path / "f.json")
    assert status["status"] == "installed" and status["version"] == "2.8.3"
    assert status["reason"] is None


def _fake_wheel(folder: Path, local: str) -> Path:
    tag = flashbuild.python_tag()
    wheel = folder / f"flash_attn-2.8.3.post2+{local}-{tag}-{tag}-linux_x86_64.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("flash_attn/__init__.py", "__version__ = '2.8.3.post2'\n")
    return wheel


def _sm90_host_with_cached_wheel(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    """A host with an sm_90 GPU and an nvcc that matches torch's CUDA, and a wheel cached
    under tmp_path/wheels for exactly that build: the wheel and its local version."""
    monkeypatch.setattr(host, "gpu_capabilities", lambda: [(9, 0)])
    monkeypatch.setattr("attnbench.host.find_nvcc", lambda environ=None: "/x/nvcc")
    monkeypatch.setattr("attnbench.host.nvcc_version", lambda nvcc=None: torch.version.cuda + ".1")
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "13.0")
    monkeypatch.setattr(host, "find_cuda_home", lambda nvcc, environ=None: tmp_path / "cuda")
    local = flashbuild.local_version("90", True, torch.__version__, torch.version.cuda)
    return _fake_wheel(tmp_path / "wheels", local), local


def test_cached_wheel_is_reused_without_building(tmp_path, monkeypatch):
    wheel, local = _sm90_host_with_cached_wheel(tmp_path, monkeypatch)
    (tmp_path / "wheels" / (wheel.name + ".json")).write_text(json.dumps({"build_seconds": 301.5}))
    installed = []
    monkeypatch.setattr(wheelbuild, "build_wheel", lambda *a, **k: pytest.fail("rebuilt"))
    monkeypatch.setattr(wheelbuild, "install_wheel", lambda w, site: installed.append((w, site)))
    monkeypatch.setattr(wheelbuild, "verify_import", lambda site: None)
    status = flashbuild.run(SETTINGS, tmp_path / "flash_attn.json", cores=16)
    assert status["status"] == "built" and status["cached"] is True
    assert status["build_seconds"] == 301.5 and status["wheel_bytes"] == wheel.stat().st_size
    assert status["version"] == f"2.8.3.post2+{local}" and status["cuda_archs"] == "90"
    assert installed == [(wheel, tmp_path / "site")]


def test_sdist_lookup_env_then_folders(tmp_path):
    name = "flash_attn-2.8.3.post2.tar.gz"
    carried = tmp_path / ".whl"
    carried.mkdir()
    (carried / name).write_bytes(b"x")
    assert wheelbuild.find_sdist("2.8.3.post2", environ={}, dirs=[carried]) == carried / name
    explicit = tmp_path / "elsewhere.tar.gz"
    explicit.write_bytes(b"y")
    env = {wheelbuild.SDIST_ENV: str(explicit)}
    assert wheelbuild.find_sdist("2.8.3.post2", environ=env, dirs=[carried]) == explicit
    assert wheelbuild.find_sdist("9.9.9", environ={}, dirs=[carried]) is None


def test_sdist_download_failure_is_one_clear_line(tmp_path):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    with pytest.raises(UserError) as info:
        wheelbuild.download_sdist("2.8.3.post2", tmp_path / "sdist", runner=offline)
    message = str(info.value)
    assert "\n" not in message and "No matching distribution" in message
    assert ".whl/" in message and wheelbuild.SDIST_ENV in message


def test_stream_logs_progress_and_returns_the_tail(caplog):
    script = "import sys\nfor i in range(1, 4): print(f'[{i}/3] nvcc x.cu')\nprint('error: boom'); sys.exit(3)"
    with caplog.at_level("INFO", logger="attnbench.env.flashbuild"):
        code, tail = wheelbuild.stream([sys.executable, "-c", script], env={"PATH": "/usr/bin"})
    assert code == 3 and tail[-1] == "error: boom"
    assert "compile 3/3 (100%)" in caplog.text
    assert wheelbuild._error_line(tail) == "error: boom"
    assert wheelbuild._error_line(["x.cu:5: error: no member", "ERROR: Failed to build"]) == (
        "x.cu:5: error: no member"
    )


NINJA_LIKE = """
import sys, time
print("Running command python setup.py bdist_wheel", flush=True)
for i in range(1, 4):
    time.sleep(0.3)
    print(f"[{i}/3] /usr/local/cuda/bin/nvcc -O3 -c /tmp/b/csrc/flash_attn/src/f{i}_sm90.cu -o f.o",
          flush=True)
    print("copying flash_attn/x.py -> build/lib", flush=True)
print("f3_sm90.cu(5): error: boom", flush=True)
sys.exit(2)
"""


def test_build_progress_at_info_and_the_rest_in_a_file(tmp_path, caplog):
    """One INFO line per compiled object and a heartbeat while quiet; pip's other lines
    only at DEBUG and in the output file; errors and the tail at INFO on failure."""
    output = tmp_path / "build-output.log"
    with caplog.at_level("DEBUG", logger="attnbench.env.flashbuild"):
        code, lines = wheelbuild.stream(
            [sys.executable, "-c", NINJA_LIKE], {"PATH": "/usr/bin"}, output=output,
            heartbeat_s=0.1,
        )  # fmt: skip
    assert code == 2 and lines[0] == "f3_sm90.cu(5): error: boom"
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    compiled = [m for m in info if m.startswith("compile ")]
    assert [m.split(",")[0] for m in compiled] == [
        "compile 1/3 (33%) f1_sm90.cu",
        "compile 2/3 (67%) f2_sm90.cu",
        "compile 3/3 (100%) f3_sm90.cu",
    ]
    assert "elapsed" in compiled[0] and "left" in compiled[0]
    assert any(m.startswith("still building: no object compiled yet") for m in info)
    assert "! f3_sm90.cu(5): error: boom" in info
    assert info[-1].startswith("build output ends:")
    assert not any("copying" in m for m in info[:-1])  # pip's chatter stays out of INFO
    assert any("copying flash_attn/x.py" in m for m in debug)
    text = output.read_text()
    assert text.count("copying") == 3 and "[3/3]" in text and "error: boom" in text


def test_heartbeat_waits_for_its_interval():
    seen, now = [], [0.0]
    log = wheelbuild.logging.getLogger("test.heartbeat")
    log.info = lambda fmt, *args: seen.append(fmt % args)  # type: ignore[method-assign]
    progress = wheelbuild.Progress(log, heartbeat_s=60, clock=lambda: now[0])
    now[0] = 59
    progress.tick()
    assert seen == []
    now[0] = 61
    progress.tick()
    assert seen == ["still building: no object compiled yet, 1m01s elapsed"]
    assert progress.line("[2/72] c++ -c /x/flash_api.cpp -o flash_api.o")
    assert seen[-1] == "compile 2/72 (3%) flash_api.cpp, 1m01s elapsed, about 35m35s left"
    assert not progress.line("building 'flash_attn_2_cuda' extension")
    now[0] = 130
    progress.tick()
    assert seen[-1] == "still building: 2 of 72 objects compiled, 2m10s elapsed"


# What `pip wheel -v` passes on from a real build: its own lines, then the build backend's
# output indented by two spaces, ninja's `[k/n]` status lines (one per finished object)
# among them, with nvcc quiet for a while between objects.
PIP_LIKE = """
import sys, time
print("Processing ./.whl/flash_attn-2.8.3.post2.tar.gz", flush=True)
print("  Building wheel for flash_attn (setup.py): started", flush=True)
print("  running build_ext", flush=True)
for i in range(1, 4):
    print(f"  [{i}/3] /usr/local/cuda/bin/nvcc -O3 -c /tmp/b/csrc/flash_attn/src/f{i}_sm90.cu "
          f"-o /tmp/b/build/f{i}_sm90.o", flush=True)
    time.sleep(0.6)
print("  Building wheel for flash_attn (setup.py): finished with status 'done'", flush=True)
"""


def test_heartbeat_counts_the_objects_of_an_indented_pip_stream(caplog):
    """pip indents the build's output: its ninja `[k/n]` lines still count as compiled
    objects, and the heartbeat between them says how many of how many are done."""
    with caplog.at_level("INFO", logger="attnbench.env.flashbuild"):
        code, _ = wheelbuild.stream(
            [sys.executable, "-c", PIP_LIKE], {"PATH": "/usr/bin"}, heartbeat_s=0.2
        )
    assert code == 0
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    compiled = [m.split(",")[0] for m in info if m.startswith("compile ")]
    assert compiled == [
        "compile 1/3 (33%) f1_sm90.cu",
        "compile 2/3 (67%) f2_sm90.cu",
        "compile 3/3 (100%) f3_sm90.cu",
    ]
    beats = [m for m in info if m.startswith("still building: ")]
    assert beats and not any("no object compiled yet" in m for m in beats)
    assert any(m.startswith("still building: 1 of 3 objects compiled, ") for m in beats)
    assert any(m.startswith("still building: 3 of 3 objects compiled, ") for m in beats)
    assert wheelbuild.NINJA_STATUS.match("  [12/73] c++ -c x.cpp").groups() == ("12", "73")
    assert wheelbuild.NINJA_STATUS.match("  see [1/2] below") is None


def test_damaged_wheel_record_is_one_line_that_says_delete_it(tmp_path, monkeypatch):
    wheel, _ = _sm90_host_with_cached_wheel(tmp_path, monkeypatch)
    record = tmp_path / "wheels" / (wheel.name + ".json")
    record.write_text('{"build_seconds": 30')  # cut short by a full disk
    monkeypatch.setattr(wheelbuild, "build_wheel", lambda *a, **k: pytest.fail("rebuilt"))
    with pytest.raises(UserError) as info:
        flashbuild.run(SETTINGS, tmp_path / "flash_attn.json", cores=16)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{record} is damaged")
    assert f"delete {record} and rerun" in message and "--forcerun" not in message


def test_activate_puts_the_site_first_and_checks_torch(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    status = {"status": "built", "site": str(site), "torch": torch.__version__, "version": "v"}
    path = tmp_path / "flash_attn.json"
    path.write_text(json.dumps(status))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert flashbuild.activate(path)["activated"] is True
    assert sys.path[0] == str(site.resolve())

    path.write_text(json.dumps({**status, "torch": "1.0.0"}))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site.resolve())])
    result = flashbuild.activate(path)
    assert result["activated"] is False and "built for torch 1.0.0" in result["reason"]
    assert str(site.resolve()) not in sys.path

    assert flashbuild.activate(tmp_path / "missing.json")["status"] == "unavailable"
    path.write_text(json.dumps({"status": "unavailable", "reason": "no GPU"}))
    assert flashbuild.activate(path) == {
        "status": "unavailable",
        "reason": "no GPU",
        "activated": False,
    }


@pytest.mark.gpu
def test_prerequisites_on_a_gpu_host():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    reason, facts = flashbuild.prerequisites()
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        assert reason and "too old" in reason
    elif facts["nvcc"] is None:
        assert reason and "nvcc" in reason
    else:
        assert facts["cuda_archs"] == flashbuild.arch_for_capability(major, minor)
