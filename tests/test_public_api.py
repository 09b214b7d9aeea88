"""Each package's public face: an explicit __all__ of names that exist, and a silent import."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "sandbox", "search", "index")


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_all_is_explicit_and_resolves(package):
    """It declares __all__ as a literal list of unique public names, each of which exists."""
    module = importlib.import_module(package)
    tree = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    assigned = [
        node for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    ]
    assert len(assigned) == 1, f"{package}/__init__.py must assign __all__ once"
    names = ast.literal_eval(assigned[0].value)
    assert isinstance(names, list) and names, f"{package}.__all__ must be a non-empty list literal"
    assert len(names) == len(set(names)), f"{package}.__all__ has duplicates"
    assert all(not name.startswith("_") for name in names)
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names missing: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_has_no_star_imports(package):
    """It re-exports names explicitly, never with `from x import *`."""
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stars = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
        assert stars == [], f"{path.relative_to(ROOT)} has star imports at lines {stars}"


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_import_is_silent(package):
    """It imports with no output on stdout or stderr (import-time code does nothing)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
