"""The house's rules, read from the source (no import of the modules): floors only look down, no circle,
no module over 400 lines without a reason at its top, and nothing below the entry points reads the run's
identity from the environment (bnspec.run is the one reader)."""

import ast
import re
from pathlib import Path

import pytest

from bnspec import FLOORS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bnspec"
MAX_LINES = 400
RUN_VARS = ("BNSPEC_FLAVOUR", "KERAS_BACKEND", "BNSPEC_MUTANT", "TF_USE_LEGACY_KERAS", "BNSPEC_DEVICE")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def room(name: str) -> str:
    """The longest FLOORS key that is `name` or a package above it (the package root itself is "bnspec")."""
    best = None
    for key in FLOORS:
        if (name == key or (key != "bnspec" and name.startswith(key + "."))) and (best is None or len(key) > len(best)):
            best = key
    assert best is not None, f"{name} has no floor in bnspec.FLOORS: give it one (and a line in bnspec/__init__.py)"
    return best


def imports(path: Path) -> set[str]:
    """Every bnspec module `path` imports, at module level or inside a function (`from bnspec import x`
    counts as bnspec.x when x is a module, else as bnspec)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "bnspec"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bnspec" and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in MODULES else node.module)
    return out


GRAPH = {name: {i for i in imports(path) if i != name} for name, path in MODULES.items()}


def test_every_module_has_a_floor():
    for name in MODULES:
        room(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_look_down_or_stay_in_the_room(name):
    here = room(name)
    climbs = [i for i in sorted(GRAPH[name]) if room(i) != here and FLOORS[room(i)] >= FLOORS[here]]
    assert not climbs, (f"{name} (floor {FLOORS[here]}, room {here}) imports {climbs}: a module imports only from "
                        "lower floors or its own room (bnspec/__init__.py)")


def test_no_circles():
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(GRAPH.get(n, ())):
            if m not in GRAPH:
                continue
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(GRAPH):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_climb_and_a_circle():
    """Meta-test: the rules above fail on a graph that breaks them."""
    assert FLOORS[room("bnspec.subjects.training")] > FLOORS[room("bnspec.measure.backend")]
    assert FLOORS[room("bnspec.report.timeline")] == FLOORS[room("bnspec.harness.history")]  # same floor, other rooms
    assert room("bnspec.report.timeline") != room("bnspec.harness.history")
    tree = ast.parse("def f():\n    from bnspec.report import verdicts\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "bnspec.report" for n in ast.walk(tree))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines_without_a_reason(name):
    text = MODULES[name].read_text()
    n = len(text.splitlines())
    if n <= MAX_LINES:
        return
    head = "\n".join(text.splitlines()[:40])
    assert re.search(r"^Size: .{20,}", head, re.M), (
        f"{name} has {n} lines (> {MAX_LINES}): split it, or say why it is one room in a 'Size: ...' line of its docstring")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "bnspec.run"))
def test_only_the_run_module_reads_the_run_identity_from_the_environment(name):
    """os.environ.get("KERAS_BACKEND"), os.environ["BNSPEC_FLAVOUR"], os.getenv(...): a read of a run identity
    variable anywhere but bnspec/run.py (writing them into a child's environment is allowed)."""
    tree = ast.parse(MODULES[name].read_text())
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv", "pop"):
            target = ast.unparse(node.func.value)
            if ("environ" in target or target == "os") and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in RUN_VARS and node.func.attr != "pop":
                reads.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and "environ" in ast.unparse(node.value) \
                and isinstance(node.slice, ast.Constant) and node.slice.value in RUN_VARS:
            reads.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not reads, f"{name} reads the run's identity from the environment: {reads}; take a bnspec.run.Run instead"


ENTRY_POINTS = {"bnspec.cli", "bnspec.measure.plugin", "bnspec.harness.mutants", "bnspec.harness.seeds", "bnspec.audit", "bnspec.audit.cli",
                "bnspec.subjects.replicas", "bnspec.run"}  # replicas: its child's main(); audit: the check() API


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in ENTRY_POINTS))
def test_the_run_is_made_only_at_entry_points(name):
    """Run.from_env() is called where a process starts (the CLI, the pytest plugin, the audit's API, a child's
    main), and everything below takes the Run as an argument."""
    calls = [node.lineno for node in ast.walk(ast.parse(MODULES[name].read_text()))
             if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Run.from_env")]
    assert not calls, f"{name} makes its own Run (lines {calls}): take the run from the entry point instead"
