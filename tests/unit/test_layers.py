"""The layers of docs/ARCHITECTURE.md hold, and no import cycle exists, imports inside functions counted.

`lint-imports` (make lint) checks the layers contract of pyproject.toml; this test checks what a layers
contract cannot see: a cycle inside one layer (two modules of one package importing each other, one of
them lazily). It reads the same graph import-linter reads (grimp), which records every import statement
of a module, at its top or inside a function; imports under `if TYPE_CHECKING:` are left out, as the
contract leaves them out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("shared", "functions", "gpu_worker", "dashboard")
MAX_MODULES_DIRECTLY_IN_SHARED = 8
MAX_LINES = 500


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PRODUCT, include_external_packages=False, exclude_type_checking_imports=True)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_even_through_imports_inside_functions(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    class Two:
        modules = frozenset({"a", "b", "c"})

        @staticmethod
        def find_modules_directly_imported_by(module: str) -> set[str]:
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[module]

    assert _cycles(Two()) == [["a", "b"]]  # type: ignore[arg-type]


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import of a product module inside a function, outside `if TYPE_CHECKING`."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] in PRODUCT:
                found.append((child.lineno, str(child.module)))
            if in_function and isinstance(child, ast.Import):
                found.extend([(child.lineno, a.name) for a in child.names if a.name.split(".")[0] in PRODUCT])
            visit(child, inside)

    visit(tree, False)
    return found


def test_a_lazy_import_of_our_own_code_says_why() -> None:
    """Lazy imports stay only where they keep heavy engines (or an SDK) out of start-up, each saying so
    with a `lazy:` comment on its line or the line above."""
    unexplained = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for lineno, module in _function_level_imports(path):
                context = " ".join(lines[max(0, lineno - 2) : lineno + 1])
                if "lazy:" not in context:
                    unexplained.append(f"{path.relative_to(REPO)}:{lineno} {module}")
    assert unexplained == []


def test_at_most_a_few_modules_directly_in_shared() -> None:
    direct = [path.name for path in (REPO / "shared").glob("*.py") if path.name not in ("__init__.py", "__main__.py")]
    assert len(direct) <= MAX_MODULES_DIRECTLY_IN_SHARED, direct


def test_every_package_of_shared_says_what_it_is() -> None:
    for init in sorted((REPO / "shared").rglob("__init__.py")):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(REPO)} has no docstring"


def test_no_product_file_over_500_lines() -> None:
    long = {}
    for package in (*PRODUCT, "function_app.py"):
        root = REPO / package
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            count = len(path.read_text().splitlines())
            if count > MAX_LINES:
                long[str(path.relative_to(REPO))] = count
    assert not long, long
