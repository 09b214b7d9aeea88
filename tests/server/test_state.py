"""Tests of server.state: per-session merge, size limit, isolation."""

import pytest

from server.state import SessionState, SessionStates, StateTooLargeError


def test_session_state_merge_sets_and_deletes_keys():
    """It applies the keys a call set and deleted, keeping the others."""
    state = SessionState()
    state.merge({"a": 1, "b": [1, 2]}, [])
    state.merge({"c": "x"}, ["a"])
    assert state.snapshot() == {"b": [1, 2], "c": "x"}


def test_session_state_last_finisher_wins_per_key():
    """It lets two calls that started from the same snapshot both land, the later one winning a shared key."""
    state = SessionState()
    state.merge({"shared": 0}, [])
    first, second = state.snapshot(), state.snapshot()
    assert first == second == {"shared": 0}
    state.merge({"shared": 1, "only_first": True}, [])
    state.merge({"shared": 2, "only_second": True}, [])
    assert state.snapshot() == {"shared": 2, "only_first": True, "only_second": True}


def test_session_state_refuses_oversized_merge():
    """It refuses a merge that would exceed the byte limit and keeps the previous state."""
    state = SessionState(max_bytes=100)
    state.merge({"small": 1}, [])
    with pytest.raises(StateTooLargeError, match="over the 100-byte limit"):
        state.merge({"big": "x" * 200}, [])
    assert state.snapshot() == {"small": 1}


def test_session_state_snapshot_is_a_copy():
    """It hands out copies, so a program changing its dict cannot change the session's state."""
    state = SessionState()
    state.merge({"items": [1]}, [])
    snap = state.snapshot()
    snap["items"].append(2)
    assert state.snapshot() == {"items": [1]}


def test_session_states_isolate_sessions():
    """It gives each session its own state."""
    class Session:  # weak-referenceable stand-in for an MCP session object
        pass

    states = SessionStates()
    one, two = Session(), Session()
    states.for_session(one).merge({"k": 1}, [])
    assert states.for_session(two).snapshot() == {}
    assert states.for_session(one).snapshot() == {"k": 1}
