"""`holds_model`: mark a fixture that loads a model or builds something with one (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def holds_model(fixture_function: F) -> F:
    """Put under `@pytest.fixture`: every test that uses the fixture must be marked `model`."""
    fixture_function.holds_model = True  # type: ignore[attr-defined]
    return fixture_function
