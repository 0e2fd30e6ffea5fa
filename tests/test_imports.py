"""One-way dependencies (docs/ARCHITECTURE.md): every import between the repo's own files, at the
top of a file or inside a function, goes down the layers, and no two files import each other
through any chain. Parsed with `ast`, nothing imported, so this runs in about a second.

A lower layer importing a higher one, or a cycle, is reported with the file, the line and the
import, e.g. `rl/vision.py:198: rl.vision (core) imports rollout.engine (rollout), a higher layer:
from rollout.engine import GenRequest`. There is no allow-list: fix the edge (move the code to the
layer that owns it). A third check: an import left inside a function says why in a comment.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prompts", "rollout", "rl", "cot_sft", "experiments")

# Lowest first. A module belongs to the layer of the longest dotted prefix listed for it
# ("rl" covers every rl.* module not named more precisely). docs/ARCHITECTURE.md explains each.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("data", ("prompts",)),
    ("core", ("rl.vision", "rl.configio", "rl.dist", "rl.packing", "rl.packed_attention", "rl.ray_loopback")),
    ("rollout", ("rollout",)),
    ("rl", ("rl",)),
    ("entry", ("rl.train", "cot_sft", "prompts.tag", "prompts.tag_core", "prompts.tag_domain",
               "prompts.tag_io")),
    ("experiments", ("experiments",)),
]


@dataclass(frozen=True)
class Edge:
    src: str  # importing module, e.g. "rl.vision"
    dst: str  # imported repo module, e.g. "rollout.engine"
    where: str  # "rl/vision.py:198"
    text: str  # the import statement as written

    def __str__(self) -> str:
        return f"{self.where}: {self.src} -> {self.dst}: {self.text}"


def layer_of(module: str, layers=LAYERS) -> tuple[int, str]:
    """(rank, name) of the layer whose longest listed prefix matches `module`."""
    best: tuple[int, int, str] | None = None  # (prefix length, rank, name)
    for rank, (name, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), rank, name)
    if best is None:
        raise KeyError(f"{module}: in no layer of tests/test_imports.py LAYERS")
    return best[1], best[2]


def repo_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every non-test .py file of the packages."""
    mods = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST):
    """Every node that can run, at any depth. `if TYPE_CHECKING:` bodies are skipped: they never
    run (annotations only), as prompts/images.py naming `PromptRow` for its row helpers."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def file_edges(module: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> list[Edge]:
    """Every import of a repo module in `path`, at any depth (functions, classes, try blocks)."""
    src = path.read_text()
    lines = src.splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = path.relative_to(root).as_posix()
    edges = []
    for node in _runtime_nodes(ast.parse(src, filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_resolve(a.name, modules) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from .sampler import y`
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from mod import name` imports mod
            targets = [_resolve(f"{base}.{a.name}", modules) for a in node.names]
        else:
            continue
        text = lines[node.lineno - 1].strip()
        for dst in dict.fromkeys(t for t in targets if t and t != module):
            edges.append(Edge(module, dst, f"{rel}:{node.lineno}", text))
    return edges


def repo_edges(root: Path = ROOT) -> list[Edge]:
    modules = repo_modules(root)
    return [e for m, f in modules.items() for e in file_edges(m, f, modules, root)]


def upward_imports(edges: list[Edge], layers=LAYERS) -> list[str]:
    """Each edge from a lower layer to a higher one."""
    out = []
    for e in edges:
        (rs, ls), (rd, ld) = layer_of(e.src, layers), layer_of(e.dst, layers)
        if rd > rs:
            out.append(f"{e.where}: {e.src} ({ls}) imports {e.dst} ({ld}), a higher layer: {e.text}")
    return out


def cycles(edges: list[Edge]) -> list[str]:
    """Each set of files that import each other (a strongly connected component of two or more
    modules, Tarjan), with the imports that close it."""
    graph: dict[str, list[str]] = {}
    for e in edges:
        graph.setdefault(e.src, []).append(e.dst)
        graph.setdefault(e.dst, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~150)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in components:
        inside = "\n  ".join(str(e) for e in edges if e.src in comp and e.dst in comp)
        out.append(f"import cycle between {sorted(comp)}:\n  {inside}")
    return out


def unexplained_lazy_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Imports inside a function or method with no comment saying why: on the import's own lines,
    on an import line of the same block, or on the line above the block (issue 18: an import
    stays in a function only to keep a heavy or optional dependency lazy, and says so)."""
    out = []
    for f in repo_modules(root, packages).values():
        src = f.read_text()
        lines = src.splitlines()
        for node in _function_level_imports(ast.parse(src)):
            k = node.lineno - 1
            said = any("#" in lines[i] for i in range(k, node.end_lineno))
            while not said and k > 0 and lines[k - 1].lstrip().startswith(("import ", "from ")):
                k -= 1
                said = "#" in lines[k]
            if not said and not (k > 0 and lines[k - 1].lstrip().startswith("#")):
                out.append(f"{f.relative_to(root).as_posix()}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return out


def _function_level_imports(tree: ast.AST):
    todo = [(tree, False)]
    while todo:
        node, in_function = todo.pop()
        if in_function and isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        todo.extend((child, inner) for child in ast.iter_child_nodes(node))


def test_imports_inside_functions_say_why():
    problems = unexplained_lazy_imports()
    assert not problems, (
        "imports inside functions without a comment saying why (move a repo or light import to the top "
        "of the file; keep a heavy or optional one lazy and say so):\n" + "\n".join(sorted(problems))
    )


def test_every_repo_module_has_a_layer():
    missing = []
    for m in repo_modules():
        try:
            layer_of(m)
        except KeyError as err:
            missing.append(str(err))
    assert not missing, "\n".join(missing)


def test_no_import_goes_up_a_layer():
    problems = upward_imports(repo_edges())
    assert not problems, "imports against the layering (docs/ARCHITECTURE.md):\n" + "\n".join(problems)


def test_no_import_cycles_between_files():
    problems = cycles(repo_edges())
    assert not problems, "\n".join(problems)


def test_the_walk_sees_imports_inside_functions():
    # rollout/engine.py imports vLLM's LLM inside VLLMEngine.__init__ and rl.vision at the top;
    # the walk must find repo imports at any depth, or the two checks above prove nothing.
    modules = repo_modules()
    edges = repo_edges()
    assert len(modules) > 80 and len(edges) > 200
    nested = [e for e in edges if e.src == "experiments.dashboard.cli" and e.dst == "experiments.dashboard.browser"]
    assert nested, "the import inside experiments/dashboard/cli.py:main was not found"


def test_checker_reports_a_crafted_cycle_and_upward_import(tmp_path):
    # A tiny repo: data.a imports app.c inside a function (upward), app.c imports data.b, and
    # data.b imports data.a: one upward edge and a three-file cycle a -> c -> b -> a. data.b's
    # TYPE_CHECKING import of app.c never runs and is not an edge.
    layers = [("low", ("data",)), ("high", ("app",))]
    (tmp_path / "data").mkdir()
    (tmp_path / "app").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("")
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "data" / "a.py").write_text("import os\n\ndef f():\n    from app.c import g\n    return g\n")
    (tmp_path / "data" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nfrom data import a\n\nif TYPE_CHECKING:\n    from app import c\n"
    )
    (tmp_path / "app" / "c.py").write_text("from data.b import a\n\ndef g():\n    pass\n")
    modules = repo_modules(tmp_path, ("data", "app"))
    edges = [e for m, f in modules.items() for e in file_edges(m, f, modules, tmp_path)]

    up = upward_imports(edges, layers)
    assert up == ["data/a.py:4: data.a (low) imports app.c (high), a higher layer: from app.c import g"]
    cyc = cycles(edges)
    assert len(cyc) == 1
    assert "['app.c', 'data.a', 'data.b']" in cyc[0]
    for where in ("data/a.py:4", "data/b.py:3", "app/c.py:1"):
        assert where in cyc[0]
    # and the import inside data.a's function says nothing about why it is there
    assert unexplained_lazy_imports(tmp_path, ("data", "app")) == ["data/a.py:4: from app.c import g"]
