"""The code's shape: no import cycles, dependencies point one way, the simulator stays out of
production, modules stay small. Read from the source (ast), so nothing here imports the packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("router", "classifier", "accounting", "simulator")
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules `name` imports anywhere (deferred imports inside functions too); TYPE_CHECKING
    blocks do not count, they never run."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(mod: str | None, level: int) -> str:
        if not level:
            return mod or ""
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[: len(base) - (level - 1)]
        return ".".join([*base, mod] if mod else base)

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = resolve(node.module, node.level)
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in known else mod)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for m in _imports(name, path, known):
            while m and m not in known:
                m = m.rpartition(".")[0]
            if m and m != name:
                deps.add(m)
        out[name] = deps
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sccs


def test_no_import_cycles() -> None:
    # Deferred (in-function) imports count too: a cycle hidden in a function is still a cycle.
    assert _cycles(_graph()) == []


def test_classifier_and_accounting_never_import_router() -> None:
    bad = {m: sorted(d for d in deps if d.startswith("router"))
           for m, deps in _graph().items() if m.split(".")[0] in ("classifier", "accounting")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_production_module_imports_the_simulator() -> None:
    bad = {m: sorted(d for d in deps if d.split(".")[0] == "simulator")
           for m, deps in _graph().items() if m.split(".")[0] != "simulator"}
    assert {m: d for m, d in bad.items() if d} == {}


def test_the_simulator_is_a_top_level_package() -> None:
    assert (ROOT / "simulator" / "__init__.py").exists()
    assert not list((ROOT / "router").rglob("mock_*.py"))


def test_no_python_file_is_over_the_size_limit() -> None:
    skip = {".venv", ".git", "node_modules", "build"}
    big = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
           if not skip & set(p.relative_to(ROOT).parts) and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_the_checker_sees_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
