"""The conda env files (envs/*.yaml) agree with each other and with what is published.

No conda client or channel is reachable where this was written, so the files cannot be
solved here; these checks hold what can be checked: every env that trains pins the same
python, pytorch, torchvision and CUDA (backends differ in the attention kernel only), the
flash-attn pin has a conda-forge build for that pytorch and CUDA, and the pins agree
with pyproject.toml and the config schema.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from attnbench import config

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
#: flash-attn 2.8.3 on conda-forge (feedstock history): pytorch minor -> CUDA versions.
#: 2.8 and 2.9 were built for CUDA 12.9 only; there is no build for pytorch 2.13.
FLASH_ATTN_283_BUILDS = {
    "2.8": {"12.9"},
    "2.9": {"12.9"},
    "2.10": {"12.9", "13.0"},
    "2.11": {"12.9", "13.0"},
    "2.12": {"12.9", "13.0"},
}
#: The same line in every env that trains.
SHARED_BY_TRAINING_ENVS = ("python", "pytorch", "torchvision", "cuda-version", "numpy")


def _specs(path: Path) -> tuple[dict[str, str], dict[str, str], dict]:
    """(conda name -> spec after the name, pip name -> version, the whole document)."""
    doc = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                name, _, version = line.partition("==")
                pip[name.strip()] = version.strip()
            continue
        name, _, spec = dep.partition("=")
        conda[name.strip()] = spec.strip()
    return conda, pip, doc


def _training_envs() -> dict[str, dict[str, str]]:
    return {p.name: _specs(p)[0] for p in ENVS if "pytorch" in _specs(p)[0]}


def test_env_files_are_found() -> None:
    assert {p.name for p in ENVS} == {"flash-attn.yaml", "torch.yaml", "workflow.yaml"}
    assert set(_training_envs()) == {"flash-attn.yaml", "torch.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_channels_are_conda_forge_only(path: Path) -> None:
    _, _, doc = _specs(path)
    assert doc["channels"] == ["conda-forge", "nodefaults"]


@pytest.mark.parametrize("package", SHARED_BY_TRAINING_ENVS)
def test_every_training_env_pins_the_same_torch_and_cuda(package: str) -> None:
    pins = {name: specs.get(package) for name, specs in _training_envs().items()}
    assert len(set(pins.values())) == 1 and None not in pins.values(), pins


def test_pytorch_build_matches_the_cuda_version() -> None:
    for name, specs in _training_envs().items():
        version, _, build = specs["pytorch"].partition("=")
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        cuda = specs["cuda-version"]
        assert build == f"cuda{cuda.replace('.', '')}*", (name, build, cuda)
        assert specs["torchvision"].endswith(f"=cuda{cuda.replace('.', '')}*"), name


def test_flash_attn_has_a_conda_forge_build_for_that_torch_and_cuda() -> None:
    specs = _specs(ROOT / "envs" / "flash-attn.yaml")[0]
    assert specs["flash-attn"] == "2.8.3"
    torch_minor = ".".join(specs["pytorch"].split("=")[0].split(".")[:2])
    assert specs["cuda-version"] in FLASH_ATTN_283_BUILDS.get(torch_minor, set()), (
        f"no conda-forge flash-attn 2.8.3 build for pytorch {torch_minor} "
        f"with CUDA {specs['cuda-version']}"
    )


def test_the_built_flash_attn_is_the_conda_one() -> None:
    """Rule build_flash_attn (no conda) compiles the same release the conda env ships."""
    conda_version = _specs(ROOT / "envs" / "flash-attn.yaml")[0]["flash-attn"]
    built = config.validate({})["flash_attn"]["version"]
    assert built == conda_version or built.startswith(conda_version + ".post"), built


def test_python_and_numpy_agree_across_every_env() -> None:
    for package in ("python", "numpy", "pandas"):
        pins = {p.name: _specs(p)[0].get(package) for p in ENVS}
        assert len(set(pins.values())) == 1, (package, pins)


def test_no_patch_pin_on_python() -> None:
    for path in ENVS:
        assert re.fullmatch(r"3\.\d+", _specs(path)[0]["python"]), path.name


def test_pip_pins_match_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(
        dep.split("==", 1) for dep in project["dependencies"] if "==" in dep and "[" not in dep
    )
    for path in ENVS:
        for name, version in _specs(path)[1].items():
            if name in wanted:
                assert version == wanted[name], (path.name, name, version, wanted[name])


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_comments_state_that_the_file_was_not_solved_here(path: Path) -> None:
    text = path.read_text()
    assert "NOT solved by a conda client" in text
    if "pytorch" in _specs(path)[0]:
        assert "CONDA_OVERRIDE_CUDA=13.0" in text
        assert "driver >= 580" in text and "glibc >= 2.28" in text
