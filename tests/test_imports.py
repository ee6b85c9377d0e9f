"""Every fxpsim module imports on its own in a fresh interpreter, and top-level imports form no cycle.

Two checks (issue 13: "python -c import of every module in a fresh process
works in any order"):

- dynamic: a driver interpreter that has imported no fxpsim module forks
  one child per module; each child imports only that module first (so each
  is the first fxpsim module loaded, as in ``python -c "import fxpsim.X"``),
  then two more children import all modules in sorted and reverse order.
  The driver preloads the third-party packages fxpsim imports (numpy,
  numba, ...) so a child pays only for fxpsim's own code; no fxpsim module
  is loaded before the fork.
- static: the graph of module-level imports (``import``/``from ... import``
  outside function bodies, ``if TYPE_CHECKING`` excluded), parsed with
  ``ast``, is acyclic; and so is the graph of all imports, function-local
  ones included, so no cycle hides behind an import placed in a function.
  An import of ``a.b.c`` also runs ``a.b``'s ``__init__``: it counts as an
  edge to both, except to the importer's own packages (already initialised
  when it runs).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fxpsim"

# ``python -m fxpsim``: runs the CLI when imported, so it is not imported here.
ENTRY_POINTS = {"fxpsim.__main__"}

# Known cycles in modules outside the graph/ refactor, reported to the lead; each entry is the
# set of modules of one strongly connected component. Keep these empty once they are broken.
KNOWN_CYCLES: list[frozenset[str]] = []
KNOWN_LOCAL_IMPORT_CYCLES: list[frozenset[str]] = []


def module_files(root: Path = ROOT, package: str = "fxpsim") -> dict[str, Path]:
    """``{"fxpsim.graph.layers.dense": path, "fxpsim.graph": path/__init__.py, ...}``."""
    mods = {}
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = module_files()


def _imports(tree: ast.Module, toplevel_only: bool = True):
    """Import nodes executed when the module is imported (not inside a def, not under TYPE_CHECKING);
    with ``toplevel_only=False`` every import node, function-local ones included."""
    if not toplevel_only:
        yield from (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
        return
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path] = MODULES, toplevel_only: bool = True) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` its (top-level) imports execute."""
    graph = {}
    for mod, path in modules.items():
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path)), toplevel_only):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                if name in modules:
                    targets.add(name)
                    targets.update(a for a in _ancestors(name) if a in modules)
        own = set(_ancestors(mod)) | {mod}
        graph[mod] = targets - own
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Components of more than one module, or of one module importing itself (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(frozenset(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_top_level_imports_are_acyclic():
    cycles = strongly_connected(import_graph())
    unknown = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles among top-level imports: {unknown}"


def test_no_cycle_hides_behind_a_function_local_import():
    """network.py once imported binary.train_layers inside a function, which imported network back."""
    cycles = strongly_connected(import_graph(toplevel_only=False))
    unknown = [sorted(c) for c in cycles if c not in KNOWN_LOCAL_IMPORT_CYCLES]
    assert not unknown, f"import cycles through function-local imports: {unknown}"


def test_graph_never_imports_binary():
    """The kind registry breaks the old cycle: binary layers register into graph, graph never imports binary."""
    graph = import_graph(toplevel_only=False)
    assert "fxpsim.graph" in graph["fxpsim.binary.train_layers"]  # via `from ..graph.layers import`
    assert "fxpsim.graph.layers.dense" in graph["fxpsim.graph.layers"]  # `from .dense import Dense`
    for mod, targets in graph.items():
        if mod == "fxpsim.graph" or mod.startswith("fxpsim.graph."):
            assert not any(t.startswith("fxpsim.binary") for t in targets), (mod, targets)


_CYCLIC_PACKAGE = {"__init__.py": "", "a.py": "from .b import B\nA = 1\n", "b.py": "def f():\n    from . import a\n",
                   "c.py": "import pkg.d\n", "d.py": "from pkg import c\n"}


def test_cycle_detector_on_a_known_package(tmp_path):
    """The detector itself: a cycle through a local import, one through absolute imports, package edges."""
    (tmp_path / "pkg").mkdir()
    for name, text in _CYCLIC_PACKAGE.items():
        (tmp_path / "pkg" / name).write_text(text)
    mods = module_files(tmp_path, "pkg")
    assert import_graph(mods)["pkg.a"] == {"pkg.b"}
    assert strongly_connected(import_graph(mods)) == [frozenset({"pkg.c", "pkg.d"})]
    assert sorted(map(sorted, strongly_connected(import_graph(mods, toplevel_only=False)))) == [
        ["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


_DRIVER = r"""
import importlib, json, os, sys, traceback
mods, preload = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not any(m == "fxpsim" or m.startswith("fxpsim.") for m in sys.modules), "fxpsim loaded before the fork"

def child(order):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for m in order:
                importlib.import_module(m)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    return os.waitpid(pid, 0)[1] == 0

failed = [m for m in mods if not child([m])]
for name, order in (("sorted", sorted(mods)), ("reversed", sorted(mods, reverse=True))):
    if not child(order):
        failed.append("<all, " + name + ">")
print(json.dumps(failed))
"""


def _third_party_roots() -> list[str]:
    roots = set()
    for path in MODULES.values():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return sorted(r for r in roots if r != "fxpsim")


def fresh_import_failures(mods: list[str], root: Path, preload: list[str] = ()) -> tuple[list[str], str]:
    """Modules of ``mods`` that fail to import first in a fresh interpreter (plus the all-module orders)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(mods), json.dumps(list(preload))],
                          capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks one child per module (POSIX)")


@needs_fork
def test_every_module_imports_first_in_a_fresh_interpreter():
    mods = sorted(m for m in MODULES if m not in ENTRY_POINTS)
    failed, stderr = fresh_import_failures(mods, ROOT, _third_party_roots())
    assert not failed, f"modules that fail when imported first: {failed}\n{stderr[-6000:]}"


@needs_fork
def test_fresh_import_driver_reports_a_failing_module(tmp_path):
    """The driver itself: a cycle whose names are used at import fails in every order; a leaf does not."""
    (tmp_path / "pkg_fresh").mkdir()
    for name, text in {"__init__.py": "", "a.py": "from .b import B\nA = 1\n", "b.py": "from .a import A\nB = 2\n",
                       "leaf.py": "X = 1\n"}.items():
        (tmp_path / "pkg_fresh" / name).write_text(text)
    mods = ["pkg_fresh.a", "pkg_fresh.b", "pkg_fresh.leaf"]
    failed, stderr = fresh_import_failures(mods, tmp_path)
    assert failed == ["pkg_fresh.a", "pkg_fresh.b", "<all, sorted>", "<all, reversed>"], stderr
    assert "partially initialized module" in stderr
