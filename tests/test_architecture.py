"""The floor plan holds: packages by concern, dependencies one way (imports written inside
functions counted), a package top level of a few modules, and a refusal that imports no torch
and no implementation."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict

import pytest

from support import REPO

PACKAGE = REPO / "b200lab"


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, object]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from every import statement (top level and
    inside functions; ``if TYPE_CHECKING:`` blocks left out). ``from pkg import name`` counts the
    submodule ``pkg.name`` when there is one, else ``pkg``."""
    mods = modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [
                            *package.split(".")[: len(package.split(".")) - node.level + 1],
                            *([node.module] if node.module else []),
                        ]
                    )
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                found = resolve(target) if target.startswith("b200lab") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(modules()):
        if v not in index:
            visit(v)
    return out


def test_no_dependency_cycle_among_the_modules_counting_imports_inside_functions():
    graph = import_graph()
    assert sum(len(v) for v in graph.values()) > 300  # the graph is read, not empty
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"b200lab.cli": {"b200lab.core.schema"}, "b200lab.core.schema": {"b200lab.cli"}}) == [
        ["b200lab.cli", "b200lab.core.schema"]
    ]


LAYERS = [  # a package may import only packages of its own layer or below
    {"b200lab", "b200lab.measure"},  # b200lab itself: its __init__ (the version) and where it lives
    {"b200lab.core"},
    {
        "b200lab.attention",
        "b200lab.precision",
        "b200lab.models",
        "b200lab.parallel",
        "b200lab.data",
        "b200lab.serving",
        "b200lab.workloads",
    },
    {"b200lab.records"},
    {"b200lab.reports"},
    {"b200lab.runner", "b200lab.tools"},
    {"b200lab.cli", "b200lab.__main__"},
]


def layer_of(module: str) -> int:
    package = ".".join(module.split(".")[:2])
    return next(i for i, layer in enumerate(LAYERS) if package in layer or module in layer)


def test_dependencies_point_one_way_from_the_runner_down_to_measure():
    upward = sorted(
        f"{a} -> {b}" for a, targets in import_graph().items() for b in targets if layer_of(b) > layer_of(a)
    )
    assert upward == []


def test_at_most_ten_modules_flat_at_the_top_of_the_package():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= 10, flat


def test_config_classes_import_no_implementation():
    """Every group's config/ package is torch-free: composing, validating and refusing a config
    import no model, kernel or recipe code."""
    graph = import_graph()
    config_modules = [m for m in graph if ".config." in m or m.startswith("b200lab.core")]
    reached, todo = set(), list(config_modules)
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo.extend(graph.get(m, ()))
    implementations = sorted(
        m
        for m in reached
        if m.startswith(
            (
                "b200lab.models.gpt",
                "b200lab.models.moe.",
                "b200lab.attention.sdpa",
                "b200lab.precision.te_fp8",
                "b200lab.workloads.train",
                "b200lab.runner",
            )
        )
    )
    assert implementations == []


def test_a_refused_run_imports_no_torch_and_no_implementation(tmp_path):
    code = (
        "import sys\nfrom b200lab.runner.app import run\ncode = run(['seq.batch=0'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformer_engine', 'mlflow', "
        "'numpy', 'matplotlib'))\n"
        "impl = sorted(m for m in sys.modules if m.startswith(('b200lab.models.gpt', 'b200lab.workloads.forward', "
        "'b200lab.attention.sdpa')))\n"
        "print(code, heavy[:5], impl)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2 [] []", out.stdout + out.stderr
    assert "seq.batch=0: must be a positive integer" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_the_runner_process_of_a_measured_run_never_imports_torch(tmp_path):
    """The ranks import torch; the process that composes, launches torchrun, folds the rank
    reports together and records them does not (that import costs seconds per point)."""
    code = (
        "import sys\nfrom b200lab.runner.app import run\n"
        f"code = run(['debug=fast', 'tracking.uri=sqlite:///{tmp_path}/mlflow.db'])\n"
        "print('modules', code, sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:5])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "status=ok" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "modules 0 []", out.stdout[-2000:] + out.stderr[-2000:]
    (results,) = tmp_path.glob("outputs/*/*/results.json")
    recorded = json.loads(results.read_text())["env"]["torch"]
    import torch

    assert recorded == torch.__version__
