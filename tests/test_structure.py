"""The package's import graph: no module imports another's private names, there are no cycles
(imports inside functions count), and nothing of research/ is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hrrformer"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(imported module, imported name) of every package-internal ``from … import`` in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in modules else (target, alias.name))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names)
    return [(m, n) for m, n in found if m in modules]


def test_no_private_names_are_imported_across_modules():
    modules = _modules()
    private = [
        f"{name} imports {target}.{imported}"
        for name, path in modules.items()
        for target, imported in _imports(name, path, modules)
        if imported.startswith("_") and imported != "__version__"
    ]
    assert not private, private


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    edges = {name: {t for t, _ in _imports(name, path, modules) if t != name} for name, path in modules.items()}
    # a module's own package __init__ is imported first by Python anyway: not an edge that can cycle
    edges = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in edges.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_collectives_module_imports_nothing_of_the_package():
    modules = _modules()
    assert _imports("hrrformer.collectives", modules["hrrformer.collectives"], modules) == []


def test_the_package_imports_nothing_of_research():
    """research/ (the repository's experiments, baselines and comparisons) is never installed: no
    module of the package may import it, at module level or inside a function."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found += [f"{name} imports {t}" for t in targets if t.split(".")[0] == "research"]
    assert not found, found


def test_research_is_not_part_of_the_package():
    """The wheel holds src/ only; the research code lives beside it, with its tests collected by pytest."""
    root = PACKAGE.parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^\[tool\.setuptools\.packages\.find\]\nwhere = \["src"\]$', pyproject, re.M)
    testpaths = re.search(r"^testpaths = \[(.*)\]$", pyproject, re.M)
    assert testpaths and '"research/tests"' in testpaths.group(1)
    assert (root / "research" / "__init__.py").is_file() and not (PACKAGE / "research").exists()
