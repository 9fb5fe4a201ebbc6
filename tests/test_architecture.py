import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tlcore_never_imports_streamlit():
    offenders = []
    for path in (ROOT / "tlcore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_registry_config_data_and_charts_load_without_tensorflow():
    code = (
        "import sys, json; import tlcore.model.backbones, tlcore.config, tlcore.charts, tlcore.metrics, tlcore.cli.main;"
        "import tlcore.data.archives, tlcore.data.common, tlcore.data.demo, tlcore.data.images, tlcore.data.pipeline;"
        "import tlcore.data.scan, tlcore.data.sources;"
        "import tlcore.model.preprocessing, tlcore.model.choices;"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


# ----------------------------------------------------------------------------- import cycles
#
# The graph has one node per tlcore module (a package's __init__.py is the package's
# node) and an edge for every ``import`` of another tlcore module, at module level AND
# inside functions. Function-level imports count because the cycle this test was
# written for was one (backbones.load_model_file imported tlcore.model.classifier inside the
# function while model imported backbones at the top): a lazy import hides a cycle
# from Python's import machinery, not from the design — the two modules still cannot
# be read, tested or moved apart. Lazy imports stay fine for heavy third-party
# packages; this rule is only about tlcore importing tlcore. Imports under
# ``if TYPE_CHECKING:`` are left out (they never run), and importing a submodule does
# not add an edge to its parent package (Python runs the parent's __init__ first, but
# a submodule that imports nothing *from* the parent does not depend on it).


def tlcore_modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the tlcore package."""
    modules = {}
    for path in sorted((ROOT / "tlcore").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_imports(tree: ast.AST):
    """Import nodes anywhere in the tree (functions included) except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict) -> str | None:
    """The tlcore module ``name`` refers to: itself, or its longest known prefix."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_modules(module: str, path: Path, modules: dict) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from tlcore import data` names a module; `from tlcore.model.classifier import x` a name in one.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        targets |= {target for name in names if (target := _known(name, modules))}
    return targets - {module}


def import_graph() -> dict[str, set[str]]:
    modules = tlcore_modules()
    return {module: _imported_modules(module, path, modules) for module, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_tlcore_has_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert cycles == [], f"import cycles inside tlcore (function-level imports included): {cycles}"


def test_the_cycle_finder_sees_module_level_and_function_level_cycles(tmp_path):
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    package = tmp_path / "tlcore"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from tlcore.two import f\n")
    (package / "two.py").write_text("def f():\n    import tlcore.one\n")
    (package / "three.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tlcore.one import f\n"
    )
    modules = {name: package / f"{name.rpartition('.')[2]}.py" for name in ("tlcore.one", "tlcore.two", "tlcore.three")}
    modules["tlcore"] = package / "__init__.py"
    graph = {name: _imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["tlcore.three"] == set()  # TYPE_CHECKING imports never run
    assert import_cycles(graph) == [["tlcore.one", "tlcore.two"]]


# ----------------------------------------------------------------------------- size limits

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
# Over the limits today and being split by others right now. The final integrator
# empties this list; nothing may be added to it.
KNOWN_OVER: set[str] = set()  # nothing over the limits: keep it that way


def size_offenders() -> dict[str, int]:
    """``"tlcore/x.py"`` or ``"tlcore/x.py::function"`` → lines, for everything over the limits."""
    offenders = {}
    for path in sorted((ROOT / "tlcore").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            offenders[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders[f"{name}::{node.name}"] = lines
    return offenders


def test_no_tlcore_module_or_function_is_too_long():
    offenders = size_offenders()
    for name in sorted(KNOWN_OVER):
        state = f"{offenders[name]} lines" if name in offenders else "now within the limit: remove it from KNOWN_OVER"
        print(f"KNOWN_OVER {name}: {state}")
    new = {name: lines for name, lines in offenders.items() if name not in KNOWN_OVER}
    assert new == {}, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function "
        f"(split them, don't extend KNOWN_OVER): {new}"
    )


# ----------------------------------------------------------------------------- no shims (issue 23)
#
# A re-export or a module ``__getattr__`` makes a name appear to live where it does not:
# a reader following an import lands in a list of names instead of the code. Every name
# is imported from the module that defines it; a package's __init__ defines its own names
# or nothing.


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level itself (functions, classes, assignments), not by importing."""
    names, stack = set(), list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            stack += [statement for handler in getattr(node, "handlers", []) for statement in handler.body]
    return names


def reexported_imports() -> list[str]:
    """``file:line: from tlcore.x import name`` for each name imported from a module that does not define it."""
    modules = tlcore_modules()
    defined = {module: _defined_names(ast.parse(path.read_text())) for module, path in modules.items()}
    found = []
    sources = [p for folder in ("tlcore", "pages", "ui", "tests", "bench") for p in (ROOT / folder).rglob("*.py")]
    for path in sorted(sources + list(ROOT.glob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in modules:
                continue
            for alias in node.names:
                if alias.name not in defined[node.module] and f"{node.module}.{alias.name}" not in modules:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_every_tlcore_name_is_imported_from_the_module_that_defines_it():
    assert reexported_imports() == [], "import these from the module that defines them (no re-exports)"


def test_no_tlcore_module_has_a_module_getattr_or_an_export_list_of_imported_names():
    offenders = []
    for module, path in tlcore_modules().items():
        tree = ast.parse(path.read_text())
        defined = _defined_names(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                offenders.append(f"{module}: module-level __getattr__ (a forwarding shim)")
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                listed = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
                offenders += [f"{module}: __all__ re-exports {name}" for name in sorted(listed - defined)]
    assert offenders == []


def test_the_data_package_init_is_only_its_docstring():
    tree = ast.parse((ROOT / "tlcore" / "data" / "__init__.py").read_text())
    assert ast.get_docstring(tree) and len(tree.body) == 1, "tlcore/data/__init__.py re-exports nothing"
