"""The import rule: server -> sandbox -> search -> index, one way, only through each package's __init__."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("server", "sandbox", "search", "index")  # each may import only packages to its right


def _modules(package, root):
    return sorted((root / package).rglob("*.py"))


def _imports(path):
    """(line, top-level package, full dotted module) of every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0], alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0], node.module


def _violations(package, root=ROOT):
    rank = LAYERS.index(package)
    found = []
    for path in _modules(package, root):
        for line, top, module in _imports(path):
            if top not in LAYERS or top == package:
                continue
            where = f"{path.relative_to(root)}:{line}"
            if LAYERS.index(top) < rank:
                found.append(f"{where}: {package} imports {module} (imports must flow server -> sandbox -> search -> index)")
            elif module != top:
                found.append(f"{where}: imports {module}; import only the public names of `{top}` (its __init__)")
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_layers_imports_flow_one_way_through_init(package):
    """It finds no import against the layer order and none past another package's __init__."""
    assert _violations(package) == []


def test_layers_checker_catches_a_violation(tmp_path):
    """It reports an upward import and a deep import (the checker itself can fail)."""
    fake = tmp_path / "sandbox"
    fake.mkdir()
    (fake / "bad.py").write_text("from server import cli\nimport search.sparse\n", encoding="utf-8")
    problems = _violations("sandbox", root=tmp_path)
    assert len(problems) == 2
    assert "flow server" in problems[0] and "public names" in problems[1]
