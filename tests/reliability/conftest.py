"""Fixtures of the reliability tests: the server tests' corpus and index, reused (built once per session)."""

from tests.server.conftest import anyio_backend, built_index, corpus_dir, token_counter  # noqa: F401 - fixtures re-exported
