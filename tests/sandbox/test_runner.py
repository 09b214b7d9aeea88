"""run_program: results, stdout capture, state changes and user-only tracebacks."""

from __future__ import annotations

import json

import pytest

from sandbox import PolicyConfig, RunResult, SandboxHit, compile_program, compile_skill, run_program
from sandbox.api import RESERVED_NAMES

HITS = [
    SandboxHit(id=f"src/m{i}.py:1-5", doc_id=f"src/m{i}.py", path=f"src/m{i}.py", start_line=1, end_line=5,
               language="python" if i % 2 else "markdown", title=f"m{i}", score=float(i), text=f"def f{i}():\n    pass\n")
    for i in range(4)
]
NORMAL_PROGRAM = '''
import json, re, math
from collections import Counter
class Finding:
    def __init__(self, hit):
        self.path = hit.path
        self.line = hit["start_line"]
counts = Counter(h.language for h in HITS)
found = [Finding(h) for h in HITS if h.score >= 1 and re.search(r"def f\\d", h.text)]
try:
    math.sqrt(-1)
except ValueError as exc:
    problem = f"{exc}"
state["seen"] = state.get("seen", 0) + len(found)
print(f"{len(found)} findings")
result = {"paths": [f.path for f in found], "counts": dict(counts), "problem": problem, "best": HITS[-1],
          "json": json.loads(json.dumps({"a": [1, 2]}))}
'''


def _run(source: str, *, state=None, skills=(), cap=10_000, mode="full", **kwargs) -> RunResult:
    return run_program(compile_program(source, PolicyConfig(mode=mode)), {"HITS": HITS}, state=state or {},
                       skills=skills, stdout_cap_bytes=cap, **kwargs)


def test_run_program_runs_a_normal_program():
    """It runs classes, comprehensions over hits, try/except, f-strings, json/re/math and state updates."""
    run = _run(NORMAL_PROGRAM, state={"seen": 1})
    assert run.outcome == "ok", run.error
    assert run.stdout == "3 findings\n"
    assert run.result["paths"] == ["src/m1.py", "src/m2.py", "src/m3.py"]
    assert run.result["counts"] == {"markdown": 2, "python": 2}
    assert run.result["problem"] == "math domain error"
    assert run.result["best"] == HITS[-1].to_dict()
    assert run.state_set == {"seen": 4} and run.state_deleted == []
    json.dumps(run.to_dict())
    assert RunResult.from_dict(run.to_dict()) == run


def test_run_program_reports_state_keys_set_deleted_and_unchanged():
    """It lists exactly the keys a program set or deleted; untouched keys are not reported."""
    run = _run("state['new'] = [1]\nstate['same'] = 'x'\ndel state['gone']\n",
               state={"same": "x", "gone": 1, "kept": {"a": 1}})
    assert (run.state_set, run.state_deleted) == ({"new": [1]}, ["gone"])


def test_run_program_state_rebinding_replaces_the_state():
    """It treats state = {...} as the new whole state."""
    run = _run("state = {'a': 2}\n", state={"a": 1, "b": 2})
    assert (run.state_set, run.state_deleted) == ({"a": 2}, ["b"])


def test_run_program_refuses_oversized_or_non_json_state():
    """It returns a runtime_error for a state over the cap or with values JSON cannot hold."""
    big = _run("state['x'] = 'a' * 70000\n")
    assert big.outcome == "runtime_error" and "65536" in big.error["message"] and big.state_set == {}
    odd = _run("state['f'] = len\n")
    assert odd.outcome == "runtime_error" and "state['f']" in odd.error["message"]


def test_run_program_program_state_is_a_private_copy():
    """It never mutates the caller's state mapping."""
    state = {"nested": {"a": 1}}
    _run("state['nested']['a'] = 2\n", state=state)
    assert state == {"nested": {"a": 1}}


def test_run_program_non_serialisable_result_is_a_clear_error():
    """It reports a result JSON cannot express as a runtime_error that says so."""
    for source in ("result = len\n", "result = float('nan')\n", "x = []\nx.append(x)\nresult = x\n"):
        run = _run(source)
        assert run.outcome == "runtime_error"
        assert "result is not JSON-serialisable" in run.error["message"] and run.error["hint"]


def test_run_program_caps_stdout_and_result():
    """It cuts printed output at the cap and shrinks a too-large result, marking truncated."""
    run = _run("for i in range(1000):\n    print('line', i)\n", cap=100)
    assert run.outcome == "ok" and run.truncated and len(run.stdout.encode()) <= 100
    run = _run("result = ['x' * 500] * 100\n", cap=1000)
    assert run.outcome == "ok" and run.truncated and len(json.dumps(run.result)) <= 1000


def test_run_program_traceback_shows_only_user_frames():
    """It reports the exception, the user's line and a traceback of the program's own frames only."""
    run = _run("def f(x):\n    return x['missing']\nvalue = f({})\n")
    error = run.error
    assert run.outcome == "runtime_error"
    assert (error["exception"], error["line"]) == ("KeyError", 2)
    assert 'File "<agent>", line 3, in <module>' in error["traceback"]
    assert "/" not in error["traceback"].replace("</", "") and "sandbox" not in error["traceback"]


def test_run_program_guard_errors_carry_a_hint():
    """It explains a blocked access with a hint."""
    run = _run("import json\njson.decoder\n")
    assert run.error["exception"] == "AttributeError" and "internals" in run.error["hint"]
    run = _run("print(open)\n", mode="restricted_only")
    assert run.error["exception"] == "NameError" and "read(path)" in run.error["hint"]


def test_run_program_recursion_is_a_clean_runtime_error():
    """It turns runaway recursion into a RecursionError result with a collapsed traceback."""
    run = _run("def f(n):\n    return f(n + 1)\nf(0)\n")
    assert run.error["exception"] == "RecursionError"
    assert "Previous line repeated" in run.error["traceback"] and run.error["traceback"].count("\n") < 30


def test_run_program_memory_error_is_memory_limit():
    """It reports a MemoryError raised by the program as outcome memory_limit."""
    run = _run("print('before')\nraise MemoryError()\n")
    assert run.outcome == "memory_limit" and run.stdout == "before\n"


def test_run_program_skills_are_globals_with_their_own_traceback_name():
    """It loads skills as globals; a failure inside one shows the skill's pseudo file name."""
    skill = compile_skill("first_path", "def first_path(hits):\n    return hits[0].path\n", PolicyConfig(),
                          reserved_names=RESERVED_NAMES)
    assert _run("result = first_path(HITS)\n", skills=[skill]).result == "src/m0.py"
    failing = _run("result = first_path([])\n", skills=[skill])
    assert '<skill:first_path>' in failing.error["traceback"]


def test_run_program_skill_has_its_own_globals():
    """A skill cannot rebind a program's names and a program's rebinding does not reach the skill: each side
    keeps the real API; state is the one dict of the call."""
    skill = compile_skill("count_hits", "def count_hits():\n    state['seen'] = 1\n    return len(HITS)\n",
                          PolicyConfig(), reserved_names=RESERVED_NAMES)
    run = _run("HITS = []\nresult = [count_hits(), len(HITS)]\n", skills=[skill])
    assert run.outcome == "ok", run.error
    assert run.result == [4, 0]
    assert run.state_set == {"seen": 1}


def test_run_program_skill_never_replaces_a_builtin_or_the_api():
    """Even a skill compiled without the reserved-name check (a planted file) replaces no builtin or API name."""
    planted = [compile_skill("len", "def len(x):\n    return 42\n", PolicyConfig()),
               compile_skill("HITS", "def HITS():\n    return []\n", PolicyConfig())]
    run = _run("result = [len('ab'), len(HITS)]\n", skills=planted)
    assert run.outcome == "ok" and run.result == [2, 4], run


def test_run_program_skill_is_defined_only_when_called():
    """A skill that fails to load fails only a program calling it, with an error naming it."""
    skill = compile_skill("shaped", "def shaped(x: int[str]):\n    return 1\n", PolicyConfig(),
                          reserved_names=RESERVED_NAMES)
    assert _run("result = 2\n", skills=[skill]).result == 2
    failing = _run("result = shaped(1)\n", skills=[skill])
    assert failing.outcome == "runtime_error" and "skill 'shaped' failed to load" in failing.error["message"]


@pytest.mark.parametrize("mode", ["restricted_only", "plain"])
def test_run_program_captures_print_in_every_mode(mode):
    """It captures printed text in the restricted and plain modes alike."""
    assert _run("print('hi', 1)\n", mode=mode).stdout == "hi 1\n"
