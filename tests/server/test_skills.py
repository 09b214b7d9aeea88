"""Skills are shared by the clients of one state dir, and sharing is safe: attacks performed for real.

Every attack goes through the real stdio server: a client saves it (refused with a clear error), or
it is planted in the state dir as another server or an older version could have left it, then
served after a restart or by a second server on the same state dir. Each test asserts that another
client's `search`, `read` and `state` are untouched, and that a program calling no skill runs exactly
as it does with no skill at all.
"""

import pytest

from tests.server.conftest import connect

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

# What another client's program sees of the API and its state; compared before and after each attack.
PROBE = """
state['mine'] = state.get('mine', 0) + 1
result = {"search": [h.path for h in search('token bucket', k=3)], "read": read('src/ratelimit.py', 1, 2),
          "bm25": [h.path for h in bm25('password', k=2)], "state": dict(state)}
"""
PROBE_NO_STATE = "result = [h.path for h in search('token bucket', k=3)] + [read('src/auth.py', 1, 1)]"

# Sources a client may try to save. Each one, if it loaded, would rebind an API name or run code at load.
ATTACKS = {
    "alias_import": "import json as search\ndef alias_import():\n    return 1\n",
    "inner_alias": "def inner_alias():\n    import json as read\n    return read\n",
    "from_alias": "def from_alias():\n    from json import loads as state\n    return state\n",
    "assigned": "def assigned():\n    return []\nsearch = assigned\n",
    "global_rebind": "def global_rebind():\n    global search\n    search = len\n    return 1\n",
    "decorated": "@list_skills\ndef decorated():\n    return 1\n",
    "default_call": "def default_call(x=state.clear()):\n    return x\n",
    "default_call2": "def default_call2(x=(state.update({'mine': 99}), 1)[1]):\n    return x\n",
    "kw_default": "def kw_default(*, hits=search('token bucket')):\n    return hits\n",
    "annotation": "def annotation(x: state.clear()):\n    return x\n",
    "returns": "def returns() -> print('loaded'):\n    return 1\n",
    "module_statement": "state['mine'] = 99\ndef module_statement():\n    return 1\n",
    "local_builtin": "def local_builtin(hits):\n    len = 0\n    return len\n",
    "new_api_name": "def new_api_name():\n    definitions = 1\n    return definitions\n",
}


def _structured(reply):
    assert reply.structured_content is not None, reply
    return reply.structured_content


async def _run(session, code: str, **args) -> dict:
    return _structured(await session.call_tool("execute_code", {"code": code, **args}))


def _plant(state_dir, name: str, source: str) -> None:
    """Write a skill file straight into the state dir, bypassing save_skill (an older server, or by hand)."""
    skills = state_dir / "skills"
    skills.mkdir(parents=True, exist_ok=True)
    (skills / f"{name}.py").write_text(source, encoding="utf-8")


async def test_skills_attacks_on_save_are_refused_and_change_nothing(built_index, tmp_path):
    """Every attack is refused at save with an error naming the rule; another client's search, read and state
    are what they were, and no skill file is written."""
    async with connect("--index", str(built_index), home=tmp_path) as victim, \
            connect("--index", str(built_index), home=tmp_path) as attacker:
        before = await _run(victim, PROBE)
        assert before["ok"], before
        for name, source in ATTACKS.items():
            reply = await attacker.call_tool("save_skill", {"name": name, "source": source, "description": "attack"})
            refused = _structured(reply)
            assert reply.is_error is True and refused["action"] == "refused", (name, refused)
            assert f"skill {name!r} refused" in refused["error"] and "[skill]" in refused["error"], refused["error"]
            assert not (tmp_path / "state" / "skills" / f"{name}.py").exists()
        after = await _run(victim, PROBE)
        assert after["result"] == {**before["result"], "state": {"mine": 2}}
        assert (await _run(attacker, "result = list_skills()"))["result"] == []


async def test_skills_error_messages_on_save_say_what_and_where(built_index, tmp_path):
    """A refused skill's error names the binding, the line and what to do instead."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        alias = _structured(await session.call_tool("save_skill", {
            "name": "tidy", "source": "def tidy(text):\n    import json as search\n    return text\n",
            "description": "x"}))
        assert "line 2" in alias["error"] and "'search'" in alias["error"] and "Rename it" in alias["error"]
        default = _structured(await session.call_tool("save_skill", {
            "name": "tidy", "source": "def tidy(text=str(1)):\n    return text\n", "description": "x"}))
        assert "not a literal" in default["error"] and "nothing may run when a skill is loaded" in default["error"]
        top = _structured(await session.call_tool("save_skill", {
            "name": "tidy", "source": "import json\ndef tidy(text):\n    return text\n", "description": "x"}))
        assert "imports go inside the function" in top["error"]


async def test_skills_planted_on_disk_never_replace_the_api_after_a_restart(built_index, tmp_path):
    """Skill files that break the rules, planted in the state dir, are never run: a restarted server gives
    programs the real API and state; a program calling one gets an error that names it."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        baseline = await _run(session, PROBE)
        baseline_plain = await _run(session, PROBE_NO_STATE)
    state_dir = tmp_path / "state"
    for name, source in ATTACKS.items():
        _plant(state_dir, name, source)
    _plant(state_dir, "search", "def search(query, k=10):\n    return []\n")  # a file named like the API
    _plant(state_dir, "state", "def state():\n    return {}\n")
    async with connect("--index", str(built_index), home=tmp_path) as session:
        probe = await _run(session, PROBE)
        assert probe["ok"] and probe["result"] == baseline["result"]  # a new session: state starts empty again
        assert (await _run(session, PROBE_NO_STATE))["result"] == baseline_plain["result"]
        called = await _run(session, "result = alias_import()")
        assert called["outcome"] == "runtime_error"
        assert "skill 'alias_import' cannot be loaded" in called["error"]["message"]
        assert "<skill:alias_import>" in called["error"]["traceback"]
        listed = await _run(session, "result = sorted(s['name'] for s in list_skills())")
        assert "search" not in listed["result"] and "state" not in listed["result"]


async def test_skills_broken_ones_fail_only_their_callers(built_index, tmp_path):
    """A skill that raises, spins or compiles huge fails only the programs that call it, with an error naming
    it; every other program, in this client and another, runs as if no skill existed."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        baseline = (await _run(session, PROBE_NO_STATE))["result"]
    state_dir = tmp_path / "state"
    _plant(state_dir, "raises", "def raises():\n    raise ValueError('broken on purpose')\n")
    _plant(state_dir, "spins", "def spins():\n    while True:\n        pass\n")
    # 50 KB of source whose constants fold to about 8 MB: over the compiled-size cap.
    _plant(state_dir, "huge", "def huge():\n" + "".join(f"    x{i} = '{i:04d}' * 1024\n" for i in range(2000)))
    async with connect("--index", str(built_index), home=tmp_path) as one, \
            connect("--index", str(built_index), home=tmp_path) as two:
        raised = await _run(one, "result = raises()")
        assert raised["outcome"] == "runtime_error" and "<skill:raises>" in raised["error"]["traceback"]
        spun = await _run(one, "result = spins()", timeout_s=2)
        assert spun["outcome"] == "timeout" and "spins" in spun["error"]["hint"]
        huge = await _run(one, "result = huge()")
        assert huge["outcome"] == "runtime_error" and "skill 'huge' cannot be loaded" in huge["error"]["message"]
        assert "compiles to" in huge["error"]["message"]
        for session in (one, two):
            plain = await _run(session, PROBE_NO_STATE)
            assert plain["ok"] and plain["result"] == baseline, plain
        # A program whose own variable is named like a broken skill is unaffected too.
        assert (await _run(two, "raises = 3\nresult = raises + 1"))["result"] == 4


async def test_skills_are_shared_by_a_second_server_on_the_same_state_dir(built_index, tmp_path):
    """A skill saved through one server is callable from a second server on the same state dir at once, and a
    rule-breaking file dropped there while both run replaces nothing in either."""
    source = "def top_paths(query, k=3):\n    return [h.path for h in bm25(query, k=k)]\n"
    async with connect("--index", str(built_index), home=tmp_path) as first, \
            connect("--index", str(built_index), home=tmp_path) as second:
        before = await _run(second, PROBE_NO_STATE)
        saved = await first.call_tool("save_skill", {"name": "top_paths", "source": source, "description": "paths"})
        assert saved.is_error is False, saved
        shared = await _run(second, "result = top_paths('token bucket', 1)")
        assert shared["result"] == ["src/ratelimit.py"], shared
        assert (await _run(second, "result = list_skills()"))["result"] == [{"name": "top_paths",
                                                                             "description": "paths"}]
        _plant(tmp_path / "state", "top_paths", "import json as search\ndef top_paths(query, k=3):\n    return []\n")
        for session in (first, second):
            assert (await _run(session, PROBE_NO_STATE))["result"] == before["result"]
            swapped = await _run(session, "result = top_paths('token bucket')")
            assert swapped["outcome"] == "runtime_error" and "top_paths" in swapped["error"]["message"]


async def test_skills_total_compiled_size_is_capped_and_calls_keep_working(built_index, tmp_path):
    """Big skills are refused once their compiled total would pass the cap; every call still runs (no request
    frame over the fork server's limit), whether it calls none, one or all of them."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        errors, saved = [], []
        for index in range(12):
            name = f"big{index}"
            body = "".join(f"    v{i} = '{index:02d}{i:04d}' * 680\n" for i in range(200))
            reply = _structured(await session.call_tool("save_skill", {
                "name": name, "source": f"def {name}():\n{body}    return v0[:6]\n", "description": "big"}))
            (saved if reply["ok"] else errors).append(reply["error"] or name)
        assert errors and "together would compile to" in errors[0], errors
        assert len(saved) >= 5, saved
        assert (await _run(session, PROBE_NO_STATE))["ok"]
        everything = await _run(session, "result = [" + ", ".join(f"{name}()" for name in saved) + "]")
        assert everything["ok"], everything
        assert everything["result"] == [f"{int(name[3:]):02d}0000" for name in saved]
