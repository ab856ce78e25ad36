"""The package's import graph: no cycles, not even through imports inside functions, and every
module imports on its own in a fresh interpreter (docs/architecture.md: a layer imports only
the layers below it)."""
import ast
import os
import subprocess
import sys

from tests.conftest import ROOT

PACKAGE = ROOT / "cod"


def modules() -> dict[str, ast.Module]:
    """Module name -> syntax tree, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its code (top level or
    inside a function), explicitly: ``import cod.x``, ``from cod.x import y``, ``from cod
    import x`` (x a module) and relative forms. Parent packages run on the way are not counted."""
    out: set[str] = set()
    package = name if (PACKAGE / "/".join(name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base not in known:
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(base)
    out.discard(name)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    trees = modules()
    graph = {name: imported(name, tree, set(trees)) for name, tree in trees.items()}
    assert "cod.families" in graph["cod"] and "cod.codec" in graph["cod.cod_codec"]  # the graph is read
    bad = cycles(graph)
    assert not bad, "import cycles: " + "; ".join(" <-> ".join(c) for c in bad)


def test_the_checker_sees_a_cycle_through_a_function_level_import():
    a = ast.parse("import cod.b\n")
    b = ast.parse("def f():\n    from cod import a\n")
    known = {"cod", "cod.a", "cod.b"}
    graph = {"cod": set(), "cod.a": imported("cod.a", a, known), "cod.b": imported("cod.b", b, known)}
    assert cycles(graph) == [["cod.a", "cod.b"]]


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported with no module of the package loaded before it (one interpreter,
    the package's modules dropped from sys.modules between imports): a cycle or a missing
    import shows as an ImportError naming the module (``cod.__main__`` runs the command: left out)."""
    names = sorted(n for n in modules() if not n.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'cod' or m.startswith('cod.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == "", r.stdout
    assert len(names) > 40


def test_import_cod_bounds_the_onednn_caches_unless_set():
    """Per-shape oneDNN / ideep caches grew a many-size batch by ~450 MiB (docs/reliability.md §4):
    `import cod` sets their capacity to 64 entries, and leaves a user's own setting alone."""
    code = "import os, cod; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], os.environ['LRU_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["64", "64"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "LRU_CACHE_CAPACITY": "7"}, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["64", "7"]


def test_import_cod_stops_openmp_spinning_unless_the_user_chose():
    """OpenMP threads spinning after an ATen operator kept the cores from the thread-independent
    decode's workers (docs/speed.md): `import cod` sets GOMP_SPINCOUNT=0, unless the user set it
    or OMP_WAIT_POLICY."""
    code = "import os, cod; print(os.environ.get('GOMP_SPINCOUNT', '-'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    assert run({}) == "0"
    assert run({"GOMP_SPINCOUNT": "5000"}) == "5000"
    assert run({"OMP_WAIT_POLICY": "ACTIVE"}) == "-"
