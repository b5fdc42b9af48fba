"""Conventions the workflow keeps (STYLE.md): a log and a benchmark per rule, and a
package whose imports only go down its stages (tools/import_graph.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)


def _rules() -> dict[str, tuple[str, str]]:
    """rule name -> (stage, the rule's text), from rules/<stage>.smk."""
    found = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        for match in RULE.finditer(path.read_text()):
            found[match.group(1)] = (path.stem, match.group(2))
    return found


def test_rules_are_found() -> None:
    assert {"validate_dataset", "probe_backends", "attention_shapes", "report", "train"} <= set(
        _rules()
    )


@pytest.mark.parametrize("rule", sorted(_rules()))
def test_every_rule_has_a_log_and_a_benchmark(rule: str) -> None:
    _, text = _rules()[rule]
    assert re.search(r"^\s+log:\n", text, re.M), f"rule {rule} has no log:"
    benchmark = re.search(r"^\s+benchmark:\n\s+\"([^\"]+)\"", text, re.M)
    assert benchmark, f"rule {rule} has no benchmark:"
    assert benchmark.group(1).startswith("results/benchmarks/"), benchmark.group(1)
    assert benchmark.group(1).endswith(".tsv")


def test_readme_leads_with_the_conda_commands() -> None:
    """The first commands a reader sees are the conda path, then the pip path."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    first, second = blocks[0], blocks[1]
    assert "conda create -c conda-forge -c bioconda -n snakemake snakemake" in first
    assert "snakemake --cores 1 --use-conda" in first
    assert "snakemake report --report report.html" in first
    # The pip path: a venv, the CPU-only torch named in words, both report commands.
    assert "python3 -m venv .venv" in second and "pip install -e ." in second
    assert "PyTorch's CPU-only wheel index" in second and "://" not in second
    assert "snakemake --cores all" in second and "results/report.html" in second
    assert "snakemake report --report report.html" in second
    assert "bash tests/run.sh" in text[: text.index("## What the workflow does")]
    assert "could not be solved here" in text and "CONDA_OVERRIDE_CUDA=13.0" in text


def _import_graph():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import import_graph
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return import_graph


def test_imports_only_go_down() -> None:
    """No circle of modules or stages, a small bottom floor, no import of a later stage."""
    graph = _import_graph()
    known = graph.modules()
    edges = graph.graph(known)
    assert graph.circles(edges) == []
    assert graph.circles(graph.package_edges(edges, known)) == []
    assert len(graph.top_level(known)) <= 12, graph.top_level(known)
    assert graph.upward(edges, known) == []
    # Every stage package has a floor: a new one must be placed in FLOORS.
    stages = {graph.stage(m, known) for m in known}
    assert stages <= set(graph.FLOOR), stages - set(graph.FLOOR)


def test_import_graph_tool_reports_and_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(
        r"^circles: none; upward imports: none; top-level modules: \d+ ", done.stdout, re.M
    )


def test_import_graph_finds_circles_and_upward_imports() -> None:
    """The checks themselves: a circle and an import of a later stage are both caught."""
    graph = _import_graph()
    assert graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    known = graph.modules()
    edges = {m: set(t) for m, t in graph.graph(known).items()}
    edges["attnbench.host"].add("attnbench.train.schedule")
    edges["attnbench.backends.patch"].add("attnbench.report.page")
    assert graph.upward(edges, known) == [
        "attnbench.backends.patch -> attnbench.report.page (backends is below report)",
        "attnbench.host -> attnbench.train.schedule (bottom is below train)",
    ]


def test_design_draws_the_stage_imports() -> None:
    """docs/DESIGN.md's picture of the stage imports is the one the code has."""
    graph = _import_graph()
    known = graph.modules()
    drawn = (ROOT / "docs" / "DESIGN.md").read_text()
    marker = "<!-- import graph: python tools/import_graph.py --mermaid -->\n```mermaid\n"
    assert marker in drawn
    block = drawn.split(marker, 1)[1].split("```", 1)[0]
    expected = graph.mermaid(graph.package_edges(graph.graph(known), known))
    assert block.strip() == expected.strip()


# Issue 26: benchmarks/ holds measurement programs only (the GPU-host harness is
# tools/gpu-host/), and nothing in the repository names a package registry's or download
# host: packages are fetched by name.
# (Written so that this file does not match itself.)
REGISTRY_HOSTS = re.compile(
    r"pypi\.org|python[h]osted|download\.pytorch\.org|anaconda\.org|conda\.anaconda"
    r"|repo\.anaconda|conda-forge\.org|github\.com/.*/releases/download"
    r"|index[-]url[ =]+['\"]?https?://|find[-]links[ =]+['\"]?https?://",
    re.I,
)


def _tracked_text_files() -> list[Path]:
    import subprocess

    names = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    files = []
    for name in names:
        path = ROOT / name
        if not name or name.endswith(".tar.gz") or not path.is_file():
            continue
        if b"\0" in path.read_bytes()[:8192]:  # binary
            continue
        files.append(path)
    return files


def test_benchmarks_holds_no_shell_script() -> None:
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").rglob("*.sh"))
    assert not scripts, f"GPU-host shell scripts belong in tools/gpu-host/: {scripts}"


def test_no_tracked_file_names_a_package_registry_host() -> None:
    files = _tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if REGISTRY_HOSTS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "fetch by package name, not from a host:\n" + "\n".join(hits)
