"""The folder tree is the architecture: the import rules of docs/design.md ("Layout"), enforced.

Every module of the four packages is parsed (not imported) and its imports are checked against
the rules below. Imports inside functions count for the library rules (they still load the
library) but not for cycles; `if TYPE_CHECKING:` imports count for both (an annotation that needs
a loop is a loop).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spaces", "evaluators", "workers", "search")
MAX_LINES = 400

#: (module prefix, third-party or first-party top-level names it may not import, why).
FORBIDDEN = (
    (
        "spaces",
        {"torch", "ray", "optuna", "transformers", "mlflow", "evaluators", "workers", "search"},
        "the search space is pure data",
    ),
    ("evaluators", {"ray", "optuna", "mlflow", "workers", "search"}, "evaluators run anywhere"),
    ("workers", {"optuna", "mlflow", "search"}, "workers know nothing of the storage or the search"),
    ("workers.runtime", {"ray"}, "the inference runtime runs without Ray"),
)
#: search.algorithms is pure: the standard library, numpy and spaces only.
ALGORITHMS_ALLOWED = {"numpy", "spaces", "search"}


@dataclass(frozen=True)
class Import:
    target: str  # the dotted module imported, or module.name for `from module import name`
    names: tuple[str, ...]  # names taken by `from ... import`
    line: int
    top_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text())
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, (), child.lineno, top_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                names = tuple(a.name for a in child.names)
                found.append(Import(_absolute(module, child), names, child.lineno, top_level))
            else:
                inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, top_level and not inner)

    visit(tree, True)
    return found


IMPORTS = {module: _imports(module) for module in MODULES}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_package_keeps_to_its_imports():
    broken = []
    for module, imports in IMPORTS.items():
        for prefix, forbidden, why in FORBIDDEN:
            if not _within(module, prefix):
                continue
            broken += [
                f"{module}:{imp.line} imports {imp.target} ({prefix}: {why})"
                for imp in imports
                if imp.target.split(".")[0] in forbidden
            ]
        if _within(module, "search.algorithms"):
            for imp in imports:
                top = imp.target.split(".")[0]
                outside = top not in ALGORITHMS_ALLOWED and top not in sys.stdlib_module_names
                if outside or (top == "search" and not _within(imp.target, "search.algorithms")):
                    broken.append(f"{module}:{imp.line} imports {imp.target} (algorithms are pure)")
    assert not broken, "\n".join(broken)


def test_no_module_is_longer_than_the_limit():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _owner(module: str) -> str:
    """The package whose members may use `module`'s private names: its own package."""
    return module if _is_package(module) else module.rpartition(".")[0]


def test_no_private_name_is_used_outside_its_package():
    crossing = []
    for module, imports in IMPORTS.items():
        for imp in imports:
            parts = imp.target.split(".")
            if parts[0] not in PACKAGES:
                continue
            private = [i for i, part in enumerate(parts) if part.startswith("_")]
            if private:
                owner = ".".join(parts[: private[0]])
                if not _within(module, owner):
                    crossing.append(f"{module}:{imp.line} imports private module {imp.target}")
            names = [n for n in imp.names if n.startswith("_") and n != "__future__"]
            if names and imp.target in MODULES and not _within(module, _owner(imp.target)):
                crossing.append(f"{module}:{imp.line} imports private {names} from {imp.target}")
    assert not crossing, "\n".join(crossing)


def _edges(module: str) -> set[str]:
    """Modules (not packages) that `module` imports at load time."""
    targets = set()
    for imp in IMPORTS[module]:
        if not imp.top_level:
            continue
        candidates = [f"{imp.target}.{name}" for name in imp.names] + [imp.target]
        targets.update(c for c in candidates if c in MODULES and not _is_package(c))
    return targets


def test_no_import_cycle_between_modules():
    graph = {m: _edges(m) for m in MODULES if not _is_package(m)}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(m for m in MODULES if _is_package(m)))
def test_every_package_says_its_job(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py needs a docstring saying its job"
