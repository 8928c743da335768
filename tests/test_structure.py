"""Rules of the code's structure (docs/architecture.md, "Structure rules"), checked over `ast`.

The import graph counts every ``import`` statement, including those inside functions: an import
that is deferred to call time still has to find a finished module, so it can close a cycle.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "app", "benchmarks", "deploy")  # importable packages (pyproject.toml)
SOURCE_DIRS = (*PACKAGES, "pages")  # pages/ is a folder of Streamlit scripts, not a package
MAX_LINES = 600
# Modules the app's Home page and the listing code need: they must not pull in TensorFlow.
TF_FREE = (
    "core.registry",
    "core.config",
    "core.info",
    "core.results",
    "core.trust",
    "core.trust.calibration",
    "core.trust.selective",
    "core.trust.ood",
    "core.trust.foreign",
    "core.trust.ensemble",
)
SKIP_DIRS = {".venv", ".git", "var", "test-artifacts", "trained_models", "node_modules"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """Every source module of core/, app/, benchmarks/ and pages/, by dotted name."""
    return {_module_name(p): p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))}


def _is_package(name: str) -> bool:
    path = _modules().get(name)
    return path is not None and path.name == "__init__.py"


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_modules()[name].read_text(encoding="utf-8"))


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def _raw_imports(name: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import statement of a module, anywhere in it.

    Relative imports are resolved against the module's package.
    """
    tree = _tree(name)
    skipped = _type_checking_nodes(tree)
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(base, alias.name) for alias in node.names]
    return found


def _reexport_source(package: str, attr: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The module that defines ``attr`` when a package ``__init__`` re-exports it, else None."""
    if package in seen or not _is_package(package):
        return None
    for module, imported in _raw_imports(package):
        if imported == attr and module in _modules():
            if _is_package(module):
                return _reexport_source(module, attr, seen | {package}) or module
            return module
    return None


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def import_graph() -> dict[str, set[str]]:
    """Internal module → internal modules it imports (directly, at any level of the code).

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``: those packages are
    edges too, except the importer's own packages (already being imported when it runs). A name
    taken from a package that re-exports it is an edge to the module that defines it.
    """
    graph: dict[str, set[str]] = {}
    for name in _modules():
        edges: set[str] = set()
        for module, imported in _raw_imports(name):
            targets = []
            if imported and f"{module}.{imported}" in _modules():
                targets.append(f"{module}.{imported}")
            source = _reexport_source(module, imported) if imported else None
            if source:
                targets.append(source)
            inside = name == module or name.startswith(module + ".")
            # `from pkg import sub` inside pkg: pkg is already being imported (as for ancestors)
            submodule = bool(imported) and f"{module}.{imported}" in _modules()
            if module in _modules() and not (inside and (source or submodule)):
                targets.append(module)
            for target in targets:
                edges.add(target)
                edges.update(
                    a
                    for a in _ancestors(target)
                    if a in _modules() and not (name == a or name.startswith(a + "."))
                )
        edges.discard(name)
        graph[name] = edges
    return graph


def _external_imports(name: str) -> set[str]:
    """Top-level names of third-party/stdlib packages a module imports."""
    return {m.split(".")[0] for m, _ in _raw_imports(name) if m and m.split(".")[0] not in PACKAGES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_cycle_finder_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_counts_function_level_and_package_imports():
    graph = import_graph()
    assert "core.info" in graph["core.config"]
    # core.models' __init__ imports its builders; importing core.models.io runs it
    assert {"core.models.cnn2d", "core.models.layers"} <= graph["core.models"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_core_never_imports_streamlit_or_the_app():
    graph = import_graph()
    for name in (m for m in graph if m.split(".")[0] == "core"):
        assert "streamlit" not in _external_imports(name), f"{name} imports streamlit"
        outside = {m for m in graph[name] if m.split(".")[0] != "core"}
        assert not outside, f"{name} imports {sorted(outside)}"


@pytest.mark.parametrize("module", TF_FREE)
def test_module_imports_without_tensorflow(module):
    if module not in _modules():
        pytest.skip(f"{module} does not exist on this branch")
    code = f"import sys, {module}; print('tensorflow' in sys.modules, 'tf_keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"], f"importing {module} imports TensorFlow"


def _repo_python_files() -> list[Path]:
    return [
        p for p in sorted(REPO.rglob("*.py")) if not SKIP_DIRS & set(p.relative_to(REPO).parts[:-1])
    ]


# built so this file's own text does not match it
_PATH_CODE = re.compile("sys" + r"\.path\s*(\.|\[|\+?=)")


def test_no_sys_path_manipulation():
    offenders = []
    for path in _repo_python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            attr = (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            # code handed to a child interpreter as a string counts too
            text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if attr or (text and _PATH_CODE.search(node.value)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, "sys.path manipulation (install the package: make setup): " + ", ".join(
        offenders
    )


def test_no_source_file_over_the_limit():
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"


# --- every name docs/architecture.md lists is importable ------------------------------------

_DOTTED = re.compile(r"^((?:core|app|benchmarks)(?:\.[A-Za-z_]\w*)+)")
_LEADING = re.compile(r"^- `([A-Za-z_][\w.]*)")
_HEADING_MODULE = re.compile(r"^#+ .*?\(`((?:core|app|benchmarks)(?:\.\w+)*)`")


def documented_names(text: str) -> list[tuple[str, str | None]]:
    """(name, module of its section) for every name the architecture map promises.

    Fully qualified ``core.x.y`` names anywhere in backticks, and the leading name of a bullet
    in a section whose heading names its module (``## Settings (`core.config`)``).
    """
    names: list[tuple[str, str | None]] = []
    section: str | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            heading = _HEADING_MODULE.match(line)
            section = heading.group(1) if heading else None
        for span in re.findall(r"`([^`]+)`", line):
            for word in span.split():
                if match := _DOTTED.match(word.removeprefix("(")):
                    names.append((match.group(1), None))
        leading = _LEADING.match(line)
        if section and leading and not _DOTTED.match(leading.group(1)):
            names.append((leading.group(1).rstrip("."), section))
    return names


def _resolve(dotted: str) -> object:
    """The object a dotted name denotes: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_documented_names_are_importable():
    names = documented_names((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert len(names) > 40  # the parser still finds the map's names
    missing = []
    for name, section in names:
        candidates = [name] if section is None else [f"{section}.{name}"]
        if section and "." in section:  # `state.follow` in app.state's section
            candidates.append(f"{section.rpartition('.')[0]}.{name}")
        for candidate in candidates:
            try:
                _resolve(candidate)
                break
            except (ImportError, AttributeError):
                continue
        else:
            missing.append(" or ".join(candidates))
    assert not missing, f"docs/architecture.md lists names that do not import: {missing}"
