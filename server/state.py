"""Per-session state: the dict a program sees as `state`, merged after every `ok` call.

Contract (INTERFACES.md section 6): a program starts from a snapshot of its session's state; after
an `ok` call the keys it set or deleted are merged (last finisher wins per key; other keys are
untouched, so concurrent calls on different keys both land). The merged state must serialise to
JSON of at most `max_bytes`; otherwise nothing is merged and the call becomes a `runtime_error`.
Sessions are keyed by their MCP session object and never see each other's state.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox import DEFAULT_STATE_MAX_BYTES

__all__ = ["SessionState", "SessionStates", "StateTooLargeError", "state_bytes"]



class StateTooLargeError(ValueError):
    """The merged state would exceed the size limit (reported as the call's runtime_error)."""

    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"session state would be {size_bytes} bytes of JSON, over the {max_bytes}-byte limit; "
            "nothing was saved: store less (e.g. paths and line numbers instead of texts) or `del state[key]`"
        )


def state_bytes(state: Mapping[str, Any]) -> int:
    """Size of the state as compact UTF-8 JSON."""
    return len(json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class SessionState:
    """One session's state; merges are atomic under a lock (calls finish on several tasks)."""

    def __init__(self, max_bytes: int = DEFAULT_STATE_MAX_BYTES) -> None:
        if max_bytes < 2:
            raise ValueError(f"max_bytes must be >= 2, got {max_bytes}")
        self.max_bytes = max_bytes
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        """A deep copy (via JSON) that a program may change freely."""
        with self._lock:
            return json.loads(json.dumps(self._data))

    def merge(self, changed: Mapping[str, Any], deleted: Iterable[str]) -> dict[str, Any]:
        """Apply one finished call's changes; returns the new state. Raises `StateTooLargeError`."""
        with self._lock:
            merged = dict(self._data)
            for key in deleted:
                merged.pop(key, None)
            for key, value in changed.items():
                if not isinstance(key, str):
                    raise TypeError(f"state keys must be strings, got {type(key).__name__}")
                merged[key] = value
            size = state_bytes(merged)
            if size > self.max_bytes:
                raise StateTooLargeError(size, self.max_bytes)
            self._data = json.loads(json.dumps(merged))
            return self._data.copy()

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._data)


class SessionStates:
    """Session object -> SessionState; an entry goes away with its session."""

    def __init__(self, max_bytes: int = DEFAULT_STATE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._states: weakref.WeakKeyDictionary[Any, SessionState] = weakref.WeakKeyDictionary()
        self._fallback: dict[int, SessionState] = {}
        self._lock = threading.Lock()

    def for_session(self, session: Any) -> SessionState:
        with self._lock:
            try:
                state = self._states.get(session)
                if state is None:
                    state = self._states[session] = SessionState(self.max_bytes)
                return state
            except TypeError:  # not weak-referenceable: keep it for the life of the server
                return self._fallback.setdefault(id(session), SessionState(self.max_bytes))
