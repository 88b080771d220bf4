"""The package's shape, read from its source (``ast``; nothing is imported or executed).

What counts as an import of module A by module B: every ``import`` and ``from … import`` statement
anywhere in B — at the top, inside functions, under ``if TYPE_CHECKING`` — absolute
(``voxtral_tts.x``) or relative (``from . import x``, ``from ..x import y``). ``from P import y``
counts as an import of the module ``P.y`` when that is a module of the package, else of ``P``.
A package is its ``__init__.py``; the parent packages Python runs on the way to a module are not
counted (every module would otherwise "import" ``voxtral_tts/__init__.py``), nor are imports by a
computed name (``importlib.import_module`` in the backend registry, which stays inside ``runtime``).

The rules:

1. **No import cycle**: no module imports itself through other modules — in particular no two
   modules import each other.
2. **Layers**: each module belongs to one layer, named by its first component under
   ``voxtral_tts`` (:data:`LAYER`); a module of a new name must be given one here. A layer may
   import only the layers :data:`MAY_IMPORT` lists for it:

   - the shared modules (``config, tokenizer, voices, text, audio, encoding, normalize, errors, reporting,
     hub, engine, tensors, checkpoint, reference_audio, segmenter``): only each other;
   - ``runtime/``: the shared modules (nothing from ``model``, ``export``, ``server``, ``api``,
     ``cli``);
   - ``model/``: the shared modules and ``runtime`` (nothing from ``export``, ``server``, ``api``,
     ``cli``);
   - ``export/``: the shared modules, ``runtime`` and ``model`` (nothing from ``server``, ``api``,
     ``cli``);
   - ``api`` (and ``voice_create``): all of the above (nothing from ``cli``, ``server``); ``cli`` (and
     ``cli_options``, the flags both command lines share, ``voice_cli`` and ``batch``): those and ``api``;
   - ``testing`` (fixture builders for the tests): the shared modules, ``runtime``, ``model``,
     ``export``;
   - the package's ``__init__``: anything but ``server``, ``cli`` and ``testing``;
   - ``server/``: anything but ``testing``.

   The exceptions, each with its reason, are :data:`EXCEPTIONS`; one no longer needed fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "voxtral_tts"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

SHARED = ("config", "tokenizer", "voices", "text", "audio", "encoding", "normalize", "errors", "hub", "engine",
          "tensors", "checkpoint", "reporting", "reference_audio", "segmenter")
#: a module's first name under the package → its layer
LAYER = {**{name: "shared" for name in SHARED},
         **{name: name for name in ("runtime", "model", "export", "api", "cli", "testing", "server")},
         "cli_options": "cli",  # the flags voxtral-run and voxtral-serve share
         "voice_create": "api",  # voice_from_codes, create_voice: the api layer's voice functions
         "voice_cli": "cli",  # voxtral-voice
         "batch": "cli"}  # voxtral-run --batch
BELOW_API = {"shared", "runtime", "model", "export"}
MAY_IMPORT = {
    "shared": {"shared"},
    "runtime": {"shared", "runtime"},
    "model": {"shared", "runtime", "model"},
    "export": BELOW_API,
    "api": BELOW_API | {"api"},
    "cli": BELOW_API | {"api", "cli"},
    "testing": BELOW_API | {"testing"},
    "package": BELOW_API | {"api", "package"},
    "server": BELOW_API | {"api", "cli", "package", "server"},
}
#: (importing module, imported layer) → why it is allowed
EXCEPTIONS = {
    ("voxtral_tts.runtime.backends.torch", "model"):
        "the PyTorch backend runs the reference modules of model/ themselves (imported inside its "
        "methods and for type checking, only when that backend is chosen); the other backends run "
        "exported engines",
}


def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module of the package under ``root``: dotted name → (file, is a package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(root: Path, package: str) -> dict[str, set[str]]:
    """module → the modules of the package it imports (the counting of this file's docstring)."""
    known = modules(root, package)

    def owner(name: str) -> str | None:  # the longest module name that ``name`` starts with
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in known.items():
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {owner(alias.name) for alias in node.names
                            if alias.name == package or alias.name.startswith(package + ".")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source != package and not source.startswith(package + "."):
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in known else owner(source))
        graph[name] = targets - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer(module: str) -> str | None:
    parts = module.split(".")
    return "package" if len(parts) == 1 else LAYER.get(parts[1])


GRAPH = imports(ROOT, PACKAGE)


def test_the_reading_sees_every_kind_of_import(tmp_path):
    """The analyser on a small package: relative imports at each level, ``from . import x``,
    absolute imports, imports inside functions and under TYPE_CHECKING, a two-module cycle and a
    three-module one."""
    files = {
        "__init__.py": "from .a import thing\n",
        "a.py": "def f():\n    from . import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n",
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.sub.d\n",
        "sub/d.py": "from ..e import x\n",
        "e.py": "from .sub import c\nimport os\n",
        "f.py": "from .sub.c import y\nfrom . import sub\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = imports(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.sub.d"}, "pkg.sub.d": {"pkg.e"}, "pkg.e": {"pkg.sub.c"},
                     "pkg.f": {"pkg.sub.c", "pkg.sub"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.e", "pkg.sub.c", "pkg.sub.d"]]


def test_the_package_was_read():
    assert {"voxtral_tts.api", "voxtral_tts.runtime.tts", "voxtral_tts.server.app", "voxtral_tts.server.cli"} <= set(
        GRAPH
    )
    assert "voxtral_tts.runtime.scheduler" in GRAPH["voxtral_tts.runtime.tts"]


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_every_module_has_a_layer():
    assert sorted(module for module in GRAPH if layer(module) is None) == [], \
        "give each new top-level module or package a layer in LAYER (and the rules above)"


def test_the_layers_hold():
    violations = sorted(
        (module, target) for module, targets in GRAPH.items() for target in targets
        if layer(module) and layer(target) and layer(target) not in MAY_IMPORT[layer(module)]
        and (module, layer(target)) not in EXCEPTIONS)
    assert violations == []


@pytest.mark.parametrize("module, imported", sorted(EXCEPTIONS))
def test_each_exception_is_still_needed(module, imported):
    assert any(layer(target) == imported for target in GRAPH[module]), f"{module} no longer imports {imported}"
