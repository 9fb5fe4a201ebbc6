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


def shim_offenders(modules: dict[str, Path]) -> list[str]:
    """A module-level ``__getattr__`` (a forwarding shim) or an ``__all__`` listing imported names, per module."""
    offenders = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        defined = _defined_names(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                offenders.append(f"{module}: module-level __getattr__ (a forwarding shim)")
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign)
                else []
            )
            if any(getattr(target, "id", None) == "__all__" for target in targets):
                listed = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
                offenders += [f"{module}: __all__ lists {name}, which it imports" for name in sorted(listed - defined)]
    return offenders


def test_no_tlcore_module_has_a_module_getattr_or_an_export_list_of_imported_names():
    assert shim_offenders(tlcore_modules()) == []


def test_the_data_package_init_is_only_its_docstring():
    tree = ast.parse((ROOT / "tlcore" / "data" / "__init__.py").read_text())
    assert ast.get_docstring(tree) and len(tree.body) == 1, "tlcore/data/__init__.py re-exports nothing"


# ----------------------------------------------------------------------------- pages and ui
#
# pages/ holds only page scripts that app.py routes with st.Page (Streamlit's st.navigation
# layout: the entrypoint is the router and frame, page scripts are run by it); what pages
# share lives in ui/. Layers: app.py and pages → ui → tlcore, never back.

# What a page (or the router) may import besides ui and tlcore: the page toolkit and the standard library.
PAGE_LIBRARIES = {"streamlit", "plotly", "pandas"}


def _imported_names(path: Path) -> list[str]:
    """Dotted names a file imports, at module level and inside functions (relative imports as ``.name``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def routed_pages(app: Path = ROOT / "app.py") -> set[str]:
    """The page files app.py passes to ``st.Page`` (string literals, as st.navigation runs them)."""
    routed = set()
    for node in ast.walk(ast.parse(app.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                routed.add(first.value)
    return routed


def page_files(root: Path = ROOT) -> set[str]:
    return {path.relative_to(root).as_posix() for path in (root / "pages").rglob("*.py")}


def test_every_file_in_pages_is_a_page_that_app_routes():
    pages = page_files()
    assert pages, "no page scripts found under pages/"
    helpers = sorted(pages - routed_pages())
    assert helpers == [], f"{helpers} are in pages/ but app.py does not route them: move shared code to ui/"
    missing = sorted(routed_pages() - pages)
    assert missing == [], f"app.py routes {missing}, which do not exist"


def page_import_offenders(root: Path = ROOT) -> list[str]:
    """``"pages/x.py: numpy"`` for every import of app.py or a page outside ui, tlcore, the page toolkit and stdlib."""
    allowed = {"ui", "tlcore"} | PAGE_LIBRARIES | set(sys.stdlib_module_names)
    offenders = []
    for path in sorted([root / "app.py", *(root / "pages").rglob("*.py")]):
        for name in _imported_names(path):
            if name.startswith(".") or name.split(".")[0] not in allowed:
                offenders.append(f"{path.relative_to(root).as_posix()}: {name}")
    return offenders


def test_pages_and_the_router_import_only_ui_tlcore_and_the_page_toolkit():
    assert page_import_offenders() == [], "a page reads widgets, calls ui/tlcore and renders; rules go to tlcore"


def test_tlcore_never_imports_ui_or_pages():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}: {name}"
        for path in sorted((ROOT / "tlcore").rglob("*.py"))
        for name in _imported_names(path)
        if name.split(".")[0] in ("ui", "pages", "app")
    ]
    assert offenders == []


def test_ui_never_imports_a_page():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}: {name}"
        for path in sorted((ROOT / "ui").rglob("*.py"))
        for name in _imported_names(path)
        if name.split(".")[0] in ("pages", "app")
    ]
    assert offenders == []


def test_the_page_guards_see_a_helper_in_pages_and_a_forbidden_import(tmp_path):
    (tmp_path / "pages" / "image").mkdir(parents=True)
    (tmp_path / "app.py").write_text('import streamlit as st\nst.navigation([st.Page("pages/image/data.py")])\n')
    (tmp_path / "pages" / "image" / "data.py").write_text(
        "import numpy as np\ndef f():\n    from pages.image import x\n"
    )
    (tmp_path / "pages" / "image" / "helper.py").write_text("from ui import shared\nimport os\n")
    assert page_files(tmp_path) - routed_pages(tmp_path / "app.py") == {"pages/image/helper.py"}
    assert page_import_offenders(tmp_path) == ["pages/image/data.py: numpy", "pages/image/data.py: pages.image"]


def section_signatures(path: Path = ROOT / "ui" / "insight" / "evaluate_sections.py") -> dict[str, list[str]]:
    """``{section: its parameter names}`` for every public ``*_section`` function of a sections module."""
    return {
        node.name: [arg.arg for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_section") and not node.name.startswith("_")
    }


def test_every_evaluate_section_takes_the_run_alone():
    # One signature: adding an analysis is one tlcore/insight module + one section the page calls with its run.
    sections = section_signatures()
    assert sections and {name: ["run"] for name in sections} == sections


def module_attributes(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the names it has at run time: what it defines and what it imports at its top level."""
    attributes = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        attributes[module] = _defined_names(tree) | {
            (alias.asname or alias.name).split(".")[0]
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
    return attributes


def missing_module_attributes(root: Path = ROOT) -> list[str]:
    """``file:line: alias.name`` where ``alias`` is an imported tlcore module that has no ``name``.

    A module imported whole (``from tlcore.model import classifier as model_lib``) and read
    as ``model_lib.describe_backbone`` fails only when that line runs, after a name moved to
    another module; this finds it from the source. A name the file binds again (an argument,
    an assignment) is not an alias there and is left out.
    """
    modules = tlcore_modules()
    bound = module_attributes(modules)
    found = []
    sources = [p for folder in ("tlcore", "pages", "ui", "tests", "bench") for p in (root / folder).rglob("*.py")]
    for path in sorted(sources + list(root.glob("*.py"))):
        tree = ast.parse(path.read_text())
        aliases, rebound = {}, set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                rebound.add(node.id)
            elif isinstance(node, ast.arg):
                rebound.add(node.arg)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = aliases.get(node.value.id)
                if module and node.value.id not in rebound and node.attr not in bound[module]:
                    if f"{module}.{node.attr}" not in modules:
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_every_name_read_through_a_tlcore_module_exists_there():
    assert missing_module_attributes() == [], "these names moved: import them from the module that defines them"


# The root of tlcore holds only the leaves every part uses (progress: a job's progress in words); everything else lives in the folder
# of its role (model/, training/, runs/, inference/, insight/, data/, text/, runners/, cli/,
# present/), so "where does X live?" has one answer. A new root module is a decision: add it here.
ROOT_LEAVES = {
    "__init__",
    "__main__",
    "caches",
    "charts",
    "config",
    "errors",
    "jobs",
    "metrics",
    "paths",
    "progress",
    "sessions",
    "words",
}


def test_the_root_of_tlcore_holds_only_the_leaves():
    root_modules = {path.stem for path in (ROOT / "tlcore").glob("*.py")}
    assert root_modules - ROOT_LEAVES == set(), "put this module in the package of its role (README: How it is built)"


def missing_tlcore_modules(root: Path = ROOT) -> list[str]:
    """``file:line: module`` for every import of a ``tlcore…`` module that does not exist (one that moved)."""
    modules = tlcore_modules()
    found = []
    sources = [p for folder in ("tlcore", "pages", "ui", "tests", "bench") for p in (root / folder).rglob("*.py")]
    for path in sorted(sources + list(root.glob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module] if node.module.split(".")[0] == "tlcore" else []
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.split(".")[0] == "tlcore"]
            else:
                names = []
            found += [f"{path.relative_to(root)}:{node.lineno}: {name}" for name in names if name not in modules]
    return found


def missing_page_modules(root: Path = ROOT) -> list[str]:
    """``file:line: module`` for every import of a ``ui…`` or ``pages…`` module that does not exist."""
    found = []
    for path in sorted(p for folder in ("pages", "ui", "tests", "bench") for p in (root / folder).rglob("*.py")):
        if path.name == "test_architecture.py":  # its guards' own planted offenders
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                base = node.module
            elif isinstance(node, ast.Import):
                names, base = [alias.name for alias in node.names], None
            else:
                continue
            for name in names:
                if name.split(".")[0] not in ("ui", "pages"):
                    continue
                parts = name.split(".")
                module = root.joinpath(*parts).with_suffix(".py")
                package = root.joinpath(*parts) / "__init__.py"
                parent = root.joinpath(*base.split(".")).with_suffix(".py") if base else None
                if not (module.is_file() or package.is_file() or (parent is not None and parent.is_file())):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_every_imported_tlcore_module_exists():
    # A lazy import inside a function fails only when that function runs: find a moved module here.
    assert missing_tlcore_modules() == []
    assert missing_page_modules() == []


def code_in_strings_offenders(root: Path = ROOT) -> list[str]:
    """The checks above, for Python code kept in strings (scripts a test or bench runs in a subprocess)."""
    modules = tlcore_modules()
    names = module_attributes(modules)
    found = []
    for path in sorted(p for folder in ("tlcore", "ui", "tests", "bench") for p in (root / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if "tlcore" not in text or "import" not in text or path.name == "test_architecture.py":
                continue
            try:
                script = ast.parse(node.value)
            except SyntaxError:
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            aliases = {}
            for statement in ast.walk(script):
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("tlcore"):
                    if statement.module not in modules:
                        found.append(f"{where}: no module {statement.module}")
                        continue
                    for alias in statement.names:
                        if f"{statement.module}.{alias.name}" in modules:
                            aliases[alias.asname or alias.name] = f"{statement.module}.{alias.name}"
                        elif alias.name not in names[statement.module]:
                            found.append(f"{where}: {statement.module} has no {alias.name}")
            for read in ast.walk(script):
                if isinstance(read, ast.Attribute) and isinstance(read.value, ast.Name) and read.value.id in aliases:
                    module = aliases[read.value.id]
                    if read.attr not in names[module] and f"{module}.{read.attr}" not in modules:
                        found.append(f"{where}: {read.value.id}.{read.attr}")
    return found


def test_code_kept_in_strings_imports_what_exists():
    assert code_in_strings_offenders() == []


# ----------------------------------------------------------------------------- ui: no re-exports, short files
#
# The rule of tlcore, for ui: a name is imported (or read through an imported module) from the
# ui module that defines it, so a reader following ``shared.scan`` lands in the code, not in a
# facade's import list.


def ui_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → file, for every module of the ui package."""
    modules = {}
    for path in sorted((root / "ui").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def ui_reexport_offenders(root: Path = ROOT) -> list[str]:
    """``file:line: …`` for each name taken from a ui module that does not define it.

    Both forms: ``from ui.shared import scan`` and ``shared.scan`` read through ``from ui import shared``.
    """
    modules = ui_modules(root)
    defined = {module: _defined_names(ast.parse(path.read_text())) for module, path in modules.items()}
    folders = [root / folder for folder in ("pages", "ui", "tests", "bench") if (root / folder).is_dir()]
    found = []
    for path in sorted([p for folder in folders for p in folder.rglob("*.py")] + list(root.glob("*.py"))):
        if path.name == "test_architecture.py":  # its guards' own planted offenders
            continue
        name, tree = path.relative_to(root).as_posix(), ast.parse(path.read_text())
        aliases, rebound = {}, set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in modules:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif alias.name not in defined[node.module]:
                        found.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                rebound.add(node.id)
            elif isinstance(node, ast.arg):
                rebound.add(node.arg)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id not in rebound:
                module, read = aliases.get(node.value.id), f"{node.value.id}.{node.attr}"
                if module and node.attr not in defined[module] and f"{module}.{node.attr}" not in modules:
                    found.append(f"{name}:{node.lineno}: {read}")
    return found


def test_every_ui_name_is_imported_from_the_module_that_defines_it():
    assert ui_reexport_offenders() == [], "import these from the ui module that defines them (no facade)"


def test_no_ui_module_has_a_module_getattr_or_an_export_list_of_imported_names():
    assert shim_offenders(ui_modules()) == []


def test_the_ui_guard_sees_a_facade_both_ways(tmp_path):
    (tmp_path / "ui").mkdir()
    (tmp_path / "pages" / "image").mkdir(parents=True)
    (tmp_path / "ui" / "__init__.py").write_text("")
    (tmp_path / "ui" / "cache.py").write_text("def scan():\n    pass\n")
    (tmp_path / "ui" / "shared.py").write_text("from ui.cache import scan\n\ndef config():\n    return scan()\n")
    (tmp_path / "pages" / "image" / "data.py").write_text(
        "from ui import shared\nfrom ui.shared import config, scan\nfrom ui import cache\n"
        "shared.config()\nshared.scan()\ncache.scan()\n"
    )
    assert ui_reexport_offenders(tmp_path) == [
        "pages/image/data.py:2: from ui.shared import scan",
        "pages/image/data.py:5: shared.scan",
    ]


# A page reads widgets, calls tlcore and renders: a longer page or ui file holds rules that belong in
# tlcore (with a unit test), or two jobs.
MAX_PAGE_LINES = 150


def long_page_files(root: Path = ROOT) -> dict[str, int]:
    """``"pages/x.py"`` or ``"ui/x.py"`` → lines, for every such file over :data:`MAX_PAGE_LINES`."""
    lines = {
        path.relative_to(root).as_posix(): len(path.read_text().splitlines())
        for folder in ("pages", "ui")
        for path in (root / folder).rglob("*.py")
    }
    return {name: count for name, count in sorted(lines.items()) if count > MAX_PAGE_LINES}


def test_no_page_or_ui_file_is_longer_than_150_lines():
    assert long_page_files() == {}, (
        f"over {MAX_PAGE_LINES} lines: move the rules (text, counts, choices) to tlcore with a test"
    )


def test_the_length_guard_sees_a_long_page_or_ui_file(tmp_path):
    (tmp_path / "pages" / "image").mkdir(parents=True)
    (tmp_path / "ui" / "insight").mkdir(parents=True)
    (tmp_path / "pages" / "image" / "data.py").write_text("x = 1\n" * MAX_PAGE_LINES)
    (tmp_path / "ui" / "insight" / "common.py").write_text("x = 1\n" * (MAX_PAGE_LINES + 1))
    assert long_page_files(tmp_path) == {"ui/insight/common.py": MAX_PAGE_LINES + 1}
