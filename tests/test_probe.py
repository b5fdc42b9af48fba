"""Device choice, environment facts, the backend probe, the GPU-job entry, and the attention
rules' scripts run on CPU through a stand-in for Snakemake's `snakemake` object."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from snakemake.iocontainers import Namedlist

from attnbench import host
from attnbench.backends import parity
from attnbench.config import canonical, keyed
from attnbench.env import envinfo
from attnbench.env.scriptutil import gpu_job
from attnbench.errors import UserError
from attnbench.measure import kernelbench

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
CPU = torch.device("cpu")
CPU_BACKENDS = ["eager", "sdpa", "sdpa_math", "sdpa_flash", "sdpa_cudnn", "flash_attn"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_select_device(no_cuda):
    assert host.select_device("auto") == CPU
    assert host.select_device(None) == CPU
    assert host.select_device("CPU") == CPU
    with pytest.raises(UserError, match="sees no CUDA GPU") as info:
        host.select_device("0")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="is not valid"):
        host.select_device("gpu7")


def test_select_device_index_beyond_the_visible_ones(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert host.select_device(0) == torch.device("cuda", 0)
    assert host.select_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match=r"sees 1 CUDA device\(s\) \(CUDA_VISIBLE_DEVICES=3\)"):
        host.select_device("1")


def test_environment_has_the_facts_and_is_json():
    env = envinfo.environment(CPU)
    for key in ("torch", "cuda", "cudnn", "flash_attn", "gpu_name", "compute_capability",
                "driver", "python", "ultralytics", "git_commit", "hostname", "cpu_model"):  # fmt: skip
        assert key in env, key
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    json.dumps(env)


def test_nvcc_lookup_follows_cuda_home(tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    assert host.find_nvcc({"CUDA_HOME": str(tmp_path), "PATH": ""}) == str(nvcc)
    assert host.nvcc_version(str(nvcc)) == "13.0.88"


def test_probe_says_which_backends_run_and_why_not():
    probe = envinfo.probe_backends(CPU_BACKENDS, CPU, torch.float32)
    assert list(probe) == CPU_BACKENDS
    for name in ("eager", "sdpa", "sdpa_math", "sdpa_flash"):
        assert probe[name]["available"] is True and probe[name]["reason"] is None
    for name in ("sdpa_cudnn", "flash_attn"):
        assert probe[name]["available"] is False and "CUDA" in probe[name]["reason"]
    assert probe["sdpa_math"]["expected"]["fwd_ops"]
    assert probe["eager"]["dtype"] == "float32" and probe["eager"]["device"] == "cpu"


# --------------------------------------------------------------------------- #
# The rules' scripts, run as Snakemake would run them


def _named(**items) -> Namedlist:
    return Namedlist(fromdict=items)


def _run_script(name: str, **parts) -> None:
    fields = {"input": {}, "output": {}, "params": {}, "log": {}, "wildcards": {}, "resources": {}}
    fields.update(parts)
    smk = SimpleNamespace(
        scriptdir=str(SCRIPTS), threads=parts.get("threads", 1),
        **{k: _named(**v) for k, v in fields.items() if k != "threads"},
    )  # fmt: skip
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": smk}, run_name="__main__")


@pytest.fixture
def results(tmp_path, monkeypatch, no_cuda):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(host, "gpu_capabilities", lambda: [])
    # The shapes script sets these with setdefault; set them here so they are restored.
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / ".ultralytics"))
    return tmp_path / "results"


def test_attention_rule_scripts_on_cpu(results):
    shapes = results / "attention" / "shapes.json"
    _run_script(
        "attention_shapes.py",
        output={"shapes": str(shapes)},
        params={"shape": canonical({"model": "yolo12n.yaml", "imgsz": 64, "batch": 2})},
        log={"log": str(results / "logs" / "shapes.log")},
    )
    doc = json.loads(shapes.read_text())
    assert {c["phase"] for c in doc["calls"]} == {"train", "val"}
    assert {(c["B"], c["heads"], c["N"]) for c in doc["calls"] if c["phase"] == "train"} == {
        (8, 2, 4),  # layer 6: area 4 at 64 px -> B' = 2 x 4, N = 4x4 / 4
        (2, 4, 4),
    }

    status = results / "env" / "flash_attn.json"
    _run_script(
        "build_flash_attn.py",
        output={"status": str(status)},
        params={
            "build": canonical(
                {
                    "flash_attn": {
                        "build": "auto",
                        "version": "2.8.3.post2",
                        "slim": True,
                        "cuda_archs": "auto",
                        "max_jobs": "auto",
                    }
                }
            )
        },  # fmt: skip
        log={"log": str(results / "logs" / "build.log")},
        threads=2,
    )
    assert json.loads(status.read_text())["status"] == "unavailable"

    train = canonical({"amp": True, "cast": "none", "imgsz": 64, "batch": 2})
    _run_script(
        "probe_backends.py",
        input={"flash_attn": str(status)},
        output={"json": str(results / "env" / "backends.json")},
        params={"backends": canonical(CPU_BACKENDS), "train": train, "device": "auto"},
        log={"log": str(results / "logs" / "probe.log")},
        resources={"gpu": 0},
    )
    probe = json.loads((results / "env" / "backends.json").read_text())
    assert set(probe) == {"environment", "backends", "flash_attn_build"}
    assert probe["backends"]["flash_attn"]["available"] is False

    for backend in ("sdpa_flash", "flash_attn"):
        flash = {"flash_attn": str(status)} if backend == "flash_attn" else {"flash_attn": []}
        _run_script(
            "parity.py",
            input={"shapes": str(shapes), **flash},
            output={"csv": str(results / "parity" / f"{backend}.csv")},
            params={
                "parity": canonical(
                    {"parity": {"thresholds": {"float32": 1e-4, "bfloat16": 3e-2}}}
                ),
                "device": "cpu",
            },
            log={"log": str(results / "logs" / f"parity-{backend}.log")},
            wildcards={"backend": backend},
            resources={"gpu": 0},
        )
        kernels = {"kernels": {"dtypes": ["float16", "float32"], "warmup": 1, "repeats": 50,
                               "seq_lens": [400], "cpu_seq_lens": [32], "cpu_repeats": 2}}  # fmt: skip
        _run_script(
            "kernel_bench.py",
            input={"shapes": str(shapes), **flash},
            output={"csv": str(results / "kernels" / f"{backend}.csv")},
            params={**keyed("kernels", kernels["kernels"]), "device": "auto"},  # as the rule
            log={"log": str(results / "logs" / f"kernels-{backend}.log")},
            wildcards={"backend": backend},
            resources={"gpu": 0},
        )
    with (results / "parity" / "sdpa_flash.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == parity.COLUMNS
    assert {r["status"] for r in rows} == {"ok"} and {r["dtype"] for r in rows} == {
        "float32",
        "bfloat16",
    }
    with (results / "kernels" / "sdpa_flash.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == kernelbench.COLUMNS
    assert {r["status"] for r in rows} == {"ok"} and {r["dtype"] for r in rows} == {"float32"}
    with (results / "kernels" / "flash_attn.csv").open() as fh:
        assert {r["status"] for r in csv.DictReader(fh)} == {"unavailable"}
    assert (
        "kernel benchmark of flash_attn"
        in (results / "logs" / "kernels-flash_attn.log").read_text()
    )


def _smk(**parts) -> SimpleNamespace:
    fields = {"input": {}, "output": {}, "params": {}, "log": {}, "wildcards": {}, "resources": {}}
    fields.update(parts)
    return SimpleNamespace(**{k: _named(**v) for k, v in fields.items()})


def test_gpu_job_sets_up_logging_slot_flash_and_device(tmp_path, no_cuda):
    status = tmp_path / "flash_attn.json"
    status.write_text(json.dumps({"status": "unavailable", "reason": "no GPU"}))
    log = tmp_path / "job.log"
    smk = _smk(
        input={"flash_attn": str(status)},
        params={"device": "auto"},
        log={"log": str(log)},
        resources={"gpu": 0},
    )
    with gpu_job(smk) as job:
        job.log.info("inside the job")
    assert job.device == CPU and job.slot.devices == ()
    assert job.flash == {"status": "unavailable", "reason": "no GPU", "activated": False}
    assert "inside the job" in log.read_text()
    with gpu_job(_smk(input={"flash_attn": []}, params={"device": "cpu"})) as job:
        assert job.flash is None and job.device == CPU


def test_gpu_job_reports_a_bad_device_in_one_line(tmp_path, no_cuda):
    smk = _smk(params={"device": "gpu7"}, log={"log": str(tmp_path / "job.log")})
    with pytest.raises(SystemExit, match="^Error: device 'gpu7' is not valid"), gpu_job(smk):
        pytest.fail("the job body ran")
