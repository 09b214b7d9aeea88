"""Programs that attack the child's own bookkeeping, run for real through the fork server (mode "full").

Issue 10: raw-memory exceptions (class 1), replies a child cannot encode (class 4, child side),
hostile exception attributes (class 6) and writes into shared library objects (class 7). Each test
performs the attack and asserts its side effect did not happen: no memory read, no ``crashed`` or
``internal_error``, no change visible to a later program.
"""

from __future__ import annotations

import json

import pytest

from sandbox import DEPTH_MARK, PolicyConfig, PolicyError

from .conftest import SandboxHandle, plain_config

pytestmark = pytest.mark.linux_only


@pytest.fixture(scope="module")
def sandbox(canary_env) -> SandboxHandle:
    handle = SandboxHandle(plain_config(policy=PolicyConfig(mode="full"), spare_children=1))
    yield handle
    handle.close()


def _is_wire_safe(result) -> None:
    """The child's reply encodes as strict UTF-8 JSON, nested at most 32 deep plus the envelope."""
    text = json.dumps({"stdout": result.stdout, "result": result.result, "error": result.error,
                       "state_set": result.state_set}, ensure_ascii=False)
    text.encode("utf-8")  # raises on a lone surrogate
    json.loads(text)


# ---- class 1: exceptions whose C fields index raw memory -------------------------------------------

@pytest.mark.parametrize("code", [
    "e = UnicodeDecodeError('utf-8', b'ab', -40, -39, 'x')\nresult = str(e)",
    "make = UnicodeEncodeError\nresult = str(make('utf-8', 'ab', -40, -39, 'x'))",
    "def f(k=UnicodeTranslateError):\n    return k\nresult = str(f()('ab', -9, -8, 'x'))",
    "class E(UnicodeDecodeError):\n    pass\nx = E('utf-8', b'ab', 0, 1, 'x')\nx.start = -64\nx.end = -63\nresult = str(x)",
    "result = isinstance(ValueError(), UnicodeDecodeError)",
])
def test_unicode_errors_cannot_be_built_subclassed_or_aliased(sandbox: SandboxHandle, code: str) -> None:
    """It refuses every use of the Unicode error classes but an except clause before anything runs, and
    without the AST layer the names are simply absent (NameError), so no out-of-range render happens."""
    with pytest.raises(PolicyError) as refused:
        sandbox.request(code)
    assert {v.rule for v in refused.value.violations} == {"except-only-name"}
    result = sandbox.run(code, mode="restricted_only")
    assert result.outcome == "runtime_error" and result.error["exception"] == "NameError", result
    assert result.result is None and "can't" not in json.dumps(result.error)


def test_unicode_errors_are_still_caught_by_name(sandbox: SandboxHandle) -> None:
    """It lets a program catch a real decode error by its class name and read its message."""
    result = sandbox.run(
        "try:\n    b'\\xff'.decode('utf-8')\nexcept (UnicodeDecodeError, UnicodeEncodeError) as exc:\n"
        "    result = [str(exc), exc.start, exc.end]\n"
        "try:\n    b'\\xff'.decode('ascii')\nexcept UnicodeError as exc:\n    result.append('base ok')\n"
    )
    assert result.outcome == "ok", result.error
    assert result.result == ["'utf-8' codec can't decode byte 0xff in position 0: invalid start byte", 0, 1, "base ok"]


def test_caught_unicode_error_fields_are_read_only(sandbox: SandboxHandle) -> None:
    """It refuses writing start/end of a caught (real) Unicode error: no out-of-range render."""
    result = sandbox.run("try:\n    b'\\xff'.decode('utf-8')\nexcept UnicodeDecodeError as exc:\n"
                         "    exc.start = -64\n    result = str(exc)\n")
    assert result.outcome == "runtime_error" and "read-only" in result.error["message"], result


# ---- class 4 (child side): replies a child cannot encode -------------------------------------------

SURROGATE = "chr(0xdcff)"


@pytest.mark.parametrize(("name", "code"), [
    ("stdout", f"print('a' + {SURROGATE} + 'b')"),
    ("result", f"result = {{'k' + {SURROGATE}: ['v' + {SURROGATE}]}}"),
    ("state", f"state['s' + {SURROGATE}] = {{'v': {SURROGATE}}}"),
    ("error", f"raise ValueError('bad ' + {SURROGATE})"),
    ("error_in_name", f"raise KeyError({SURROGATE} * 3)"),
])
def test_lone_surrogates_are_escaped_in_every_channel(sandbox: SandboxHandle, name: str, code: str) -> None:
    """It answers with \\udcff escapes instead of crashing, whichever channel carries the surrogate."""
    result = sandbox.run(code)
    assert result.outcome in ("ok", "runtime_error"), result
    _is_wire_safe(result)
    assert "\\udcff" in json.dumps([result.stdout, result.result, result.error, result.state_set], ensure_ascii=False)


@pytest.mark.parametrize("depth", [200, 600, 900])
def test_deep_results_are_cut_at_32_levels_with_the_shared_marker(sandbox: SandboxHandle, depth: int) -> None:
    """It cuts a result nested `depth` deep at 32 levels with DEPTH_MARK and marks it truncated."""
    result = sandbox.run(f"x = 1\nfor i in range({depth}):\n    x = [x]\nresult = x")
    assert result.outcome == "ok", result
    _is_wire_safe(result)
    level, node = 0, result.result
    while isinstance(node, list):
        node, level = node[0], level + 1
    assert (level, node, result.truncated) == (32, DEPTH_MARK, True)


@pytest.mark.parametrize("depth", [40, 600, 900])
def test_deep_state_is_refused_with_a_clear_error(sandbox: SandboxHandle, depth: int) -> None:
    """It refuses a state value nested deeper than 32 levels as a runtime_error naming the key."""
    result = sandbox.run(f"x = 1\nfor i in range({depth}):\n    x = {{'k': x}}\nstate['deep'] = x\nresult = 'set'")
    assert result.outcome == "runtime_error", result
    assert "state['deep']" in result.error["message"] and "32" in result.error["message"]
    assert result.state_set == {}


def test_deep_stdout_and_deep_print_of_nesting_are_fine(sandbox: SandboxHandle) -> None:
    """It prints the repr of an 800-deep list (a string, however deep the value) without crashing."""
    result = sandbox.run("x = []\nfor i in range(800):\n    x = [x]\nprint(len(str(x)))\nresult = 'ok'")
    assert result.outcome in ("ok", "runtime_error"), result
    _is_wire_safe(result)


# ---- class 6: hostile exception attributes ---------------------------------------------------------

@pytest.mark.parametrize("code", [
    "class N(NameError):\n    pass\ne = N('x')\ne.name = ['unhashable']\nraise e",
    "class N(NameError):\n    pass\ne = N('x')\ne.name = {'a': 1}\nraise e",
    "class N(NameError):\n    pass\ne = N()\ne.name = 'open'\nraise e",
    "class E(Exception):\n    pass\ne = E()\ne.args = ([[[]]] * 10,)\nraise e",
    "x = []\nfor i in range(5000):\n    x = [x]\nraise ValueError(x)",
    "raise ValueError('m' * 5_000_000)",
    "class E(ImportError):\n    pass\ne = E('x')\ne.name = ['not', 'a', 'str']\ne.path = {}\nraise e",
    "class E(OSError):\n    pass\nraise E(['errno'], {'strerror': 1}, ['file'])",
    "class E(StopIteration):\n    pass\nraise E([1] * 10)",
    "class E(AttributeError):\n    pass\ne = E('x')\ne.name = [1]\ne.obj = e\nraise e",
    "class E(KeyError):\n    pass\nraise E(E(E('nested')))",
])
def test_hostile_exception_attributes_give_runtime_error(sandbox: SandboxHandle, code: str) -> None:
    """It reports runtime_error (never internal_error or crashed) whatever the exception carries."""
    result = sandbox.run(code)
    assert result.outcome == "runtime_error", result
    assert len(result.error["message"]) <= 2001
    _is_wire_safe(result)


# ---- class 7: writes into shared library objects -----------------------------------------------------

PROBE = "textwrap.TextWrapper.unicode_whitespace_trans.get(32)"


@pytest.mark.parametrize("write", [
    "textwrap.TextWrapper.unicode_whitespace_trans[32] = 88",
    "textwrap.TextWrapper.unicode_whitespace_trans.update({32: 88})",
    "textwrap.TextWrapper.unicode_whitespace_trans.clear()",
    "d = textwrap.TextWrapper.unicode_whitespace_trans\nd[32] = 88",
    "w = textwrap.TextWrapper()\nw.unicode_whitespace_trans[32] = 88",
    "w = textwrap.TextWrapper()\nw.unicode_whitespace_trans.pop(32)",
    "d = textwrap.TextWrapper.unicode_whitespace_trans\ndel d[32]",
])
def test_writes_through_module_proxies_never_reach_the_library_object(sandbox: SandboxHandle, write: str) -> None:
    """It hands out copies of a library class's mutable attributes: the write lands on the copy, and the
    library object (read again in the same program, where the write would show) is unchanged."""
    result = sandbox.run(f"import textwrap\n{write}\nresult = [{PROBE}, textwrap.fill('a b', 80)]")
    assert result.outcome == "ok", result.error
    assert result.result == [32, "a b"]


def test_writes_to_library_classes_and_instances_are_refused(sandbox: SandboxHandle) -> None:
    """It refuses attribute writes on a library class and on a library object's instance."""
    for code in ("import textwrap\ntextwrap.TextWrapper.width = 3", "import textwrap\nw = textwrap.TextWrapper()\nw.width = 3",
                 "import collections\ncollections.Counter.most_common = len"):
        result = sandbox.run(code)
        assert result.outcome == "runtime_error" and "read-only" in result.error["message"], (code, result)


def test_own_objects_and_api_results_stay_writable_and_fresh(sandbox: SandboxHandle) -> None:
    """It lets a program change its own objects, a library object's own state and what the API returns,
    and every API call returns fresh values."""
    result = sandbox.run(
        "import difflib\nclass A:\n    pass\na = A()\na.items = [1]\na.items.append(2)\n"
        "m = difflib.SequenceMatcher(None, 'abc', 'abd')\nm.b2j['zz'] = [9]\n"
        "mine = list_skills()\nmine.append('x')\n"
        "result = [a.items, m.b2j['zz'], mine, list_skills()]"
    )
    assert result.outcome == "ok", result.error
    assert result.result == [[1, 2], [9], ["x"], []]
