"""attnbench's own import graph: circles, the bottom floor's size, and imports that go up.

Reads every module of attnbench/ with `ast` (imports inside functions and under
TYPE_CHECKING count too: they are dependencies all the same) and checks three rules:

- no circle: no strongly connected component of more than one module, and none of
  more than one stage package;
- at most 12 top-level modules (`attnbench/*.py`, `__init__.py` included);
- imports only go down the floors of `FLOORS`: a module imports from its own floor or
  a lower one, and the bottom floor (the top-level modules) imports no subpackage.

    python tools/import_graph.py              # the summary; exit 1 if a rule is broken
    python tools/import_graph.py --packages   # also each stage's imports, by package
    python tools/import_graph.py --mermaid    # the package graph as a mermaid flowchart

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "attnbench"
BOTTOM = "bottom"  # the top-level modules
MAX_TOP_LEVEL = 12

# The stages from the bottom up; a module imports from its own floor or below it. Stages of
# one floor may import each other (one way: a circle between packages fails too).
FLOORS: tuple[tuple[str, ...], ...] = (
    (BOTTOM, "schemas", "resources"),  # the top-level modules; schemas/resources hold data
    ("data", "backends"),  # datasets; the attention backends (parse-time facts, registry)
    ("env", "measure"),  # env probes the backends; measure: step time, profiling, kernels
    ("train",),  # one training run, recorded with measure's instruments
    ("timing",),  # paired timing: trainings of several backends in one process
    ("sweep", "inference"),  # the sweep pairs its cells with timing; inference reads the sweep plan
    ("analysis",),  # the aggregate tables of the study, the sweep and inference
    ("report",),  # the report's views, words and figures
)
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def modules(root: Path = ROOT / PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, for every module (a package is its __init__.py)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: Mapping[str, Path]) -> str | None:
    """The module that `name` (a module or a name inside one) lives in, if it is ours."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules of the package that `module` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target, known)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def graph(known: Mapping[str, Path]) -> dict[str, set[str]]:
    return {module: imports(module, path, known) for module, path in known.items()}


def stage(module: str, known: Mapping[str, Path]) -> str:
    """The stage package a module belongs to, or BOTTOM for a top-level module."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and known[module].name != "__init__.py"):
        return BOTTOM
    return parts[1]


def circles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def package_edges(edges: Mapping[str, set[str]], known: Mapping[str, Path]) -> dict[str, set[str]]:
    """Stage -> the other stages it imports from (BOTTOM included)."""
    out: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        here = stage(module, known)
        out[here]
        for target in targets:
            there = stage(target, known)
            if there != here:
                out[here].add(there)
    return dict(out)


def upward(edges: Mapping[str, set[str]], known: Mapping[str, Path]) -> list[str]:
    """'a -> b' for each import of a stage above the importer's floor (or an unplaced stage)."""
    found = []
    for module in sorted(edges):
        here = stage(module, known)
        for target in sorted(edges[module]):
            there = stage(target, known)
            if here not in FLOOR or there not in FLOOR:
                unplaced = here if here not in FLOOR else there
                found.append(f"{module} -> {target} (stage {unplaced} has no floor in FLOORS)")
            elif FLOOR[there] > FLOOR[here] or (here == BOTTOM and there != BOTTOM):
                found.append(f"{module} -> {target} ({here} is below {there})")
    return found


def top_level(known: Mapping[str, Path]) -> list[str]:
    return sorted(m for m, p in known.items() if p.parent == ROOT / PACKAGE)


def _floor_order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda s: (FLOOR.get(s, len(FLOORS)), s))


def mermaid(packages: Mapping[str, set[str]]) -> str:
    """The stage graph as a flowchart, each arrow from a stage to one that imports it; the
    bottom floor's arrows are left out (every stage imports it)."""
    lines = ["flowchart BT", "    %% every stage also imports the bottom floor (top-level modules)"]
    lines += [f"    {name}" for name in _floor_order(packages) if FLOOR.get(name) != 0]
    for here in _floor_order(packages):
        for there in _floor_order(packages[here] - {BOTTOM}):
            lines.append(f"    {there} --> {here}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", action="store_true", help="print each stage's imports")
    parser.add_argument("--mermaid", action="store_true", help="print the package graph")
    args = parser.parse_args(argv)

    known = modules()
    edges = graph(known)
    packages = package_edges(edges, known)
    module_circles = circles(edges)
    package_circles = circles(packages)
    up = upward(edges, known)
    tops = top_level(known)

    if args.packages:
        for here in _floor_order(packages):
            names = _floor_order(packages[here])
            print(f"{here} (floor {FLOOR.get(here, '?')}) imports: {', '.join(names) or '-'}")
    if args.mermaid:
        print(mermaid(packages))
    for component in module_circles:
        print("circle:", " -> ".join(component))
    for component in package_circles:
        print("package circle:", " -> ".join(component))
    for line in up:
        print("upward import:", line)
    if len(tops) > MAX_TOP_LEVEL:
        print(f"top-level modules ({len(tops)}): {', '.join(tops)}")
    n_circles = len(module_circles) + len(package_circles)
    print(
        f"circles: {n_circles or 'none'}; upward imports: {len(up) or 'none'}; "
        f"top-level modules: {len(tops)} (at most {MAX_TOP_LEVEL}); "
        f"modules: {len(known)}, imports: {sum(map(len, edges.values()))}"
    )
    return 1 if n_circles or up or len(tops) > MAX_TOP_LEVEL else 0


if __name__ == "__main__":
    sys.exit(main())
