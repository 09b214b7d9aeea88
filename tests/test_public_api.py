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


def _imported_through_packages() -> dict[str, set[str]]:
    """Names each package's users (other packages, tests, benchmarks, scripts) take from its __init__."""
    used: dict[str, set[str]] = {package: set() for package in PACKAGES}
    sources = [
        path for folder in (*PACKAGES, "tests", "benchmarks", "scripts") for path in (ROOT / folder).rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # benchmarks/.cache: fetched trees
    ]
    for path in sources:
        owner = path.relative_to(ROOT).parts[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in PACKAGES and node.module != owner:
                used[node.module].update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                aliases.update({alias.asname or alias.name: alias.name for alias in node.names if alias.name in PACKAGES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != owner):
                used[aliases[node.value.id]].add(node.attr)
    return used


def test_public_api_all_lists_only_what_other_packages_use():
    """It exports from each package only names that another package, a test or a benchmark imports from it."""
    used = _imported_through_packages()
    for package in PACKAGES:
        exported = set(importlib.import_module(package).__all__)
        unused = exported - used[package]
        assert unused == set(), f"{package}.__all__ exports names nobody outside it imports: {sorted(unused)}"
