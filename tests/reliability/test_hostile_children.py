"""Hostile programs through the real `knowledge-mcp serve`, driven by the mcp client (issue 10, classes 1, 4, 6, 7).

Pass: the mcp client parses every reply as a tool result (no lost reply, no JSON-RPC error), no reply
is `crashed` or `internal_error`, and what one program wrote into a shared library object is not
seen by the next program.
"""

import os
import uuid

import anyio
import pytest

from tests.reliability import procs, soak
from tests.sandbox.test_memory_isolation import marker_forms, scan_memory
from tests.server.conftest import connect

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

S = "chr(0xdcff)"
HOSTILE = {
    "surrogate_stdout": f"print('a' + {S})",
    "surrogate_result": f"result = {{'k' + {S}: [{S}]}}",
    "surrogate_state": f"state['k' + {S}] = {S}\nresult = 1",
    "surrogate_error": f"raise ValueError({S})",
    "deep_result_200": "x = 1\nfor i in range(200):\n    x = [x]\nresult = x",
    "deep_result_300": "x = 1\nfor i in range(300):\n    x = {'a': x}\nresult = x",
    "deep_result_900": "x = 1\nfor i in range(900):\n    x = [x]\nresult = x",
    "deep_state_900": "x = 1\nfor i in range(900):\n    x = [x]\nstate['d'] = x\nresult = 1",
    "unhashable_name": "class N(NameError):\n    pass\ne = N('x')\ne.name = ['u']\nraise e",
    "huge_message": "raise ValueError('m' * 3_000_000)",
    "unicode_error_built": "result = str(UnicodeDecodeError('utf-8', b'ab', -40, -39, 'x'))",
    "unicode_error_subclass": "class E(UnicodeDecodeError):\n    pass\nresult = 1",
}


async def test_hostile_children_every_reply_parses_and_none_crashes(built_index, tmp_path):
    """It answers each hostile program with a tool result the mcp client parses; none crashed or internal."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        for name, code in HOSTILE.items():
            reply = await session.call_tool("execute_code", {"code": code})  # raises if the reply is lost
            content = reply.structured_content
            assert content is not None, (name, reply)
            assert content["outcome"] not in ("crashed", "internal_error"), (name, content)
        after = await session.call_tool("execute_code", {"code": "result = 'still serving'"})
        assert after.structured_content["result"] == "still serving"


async def test_hostile_children_shared_library_objects_stay_unchanged(built_index, tmp_path):
    """It refuses or contains writes into a module proxy's mutable attributes; a later program sees the
    library object as it was."""
    attacks = [
        "import textwrap\ntextwrap.TextWrapper.unicode_whitespace_trans[32] = 88",
        "import textwrap\nd = textwrap.TextWrapper.unicode_whitespace_trans\nd.update({32: 88})\nresult = 1",
        "import textwrap\nd = textwrap.TextWrapper.unicode_whitespace_trans\nd.clear()\nresult = 1",
    ]
    probe = "import textwrap\nresult = textwrap.TextWrapper.unicode_whitespace_trans.get(32)"
    async with connect("--index", str(built_index), home=tmp_path) as session:
        before = (await session.call_tool("execute_code", {"code": probe})).structured_content["result"]
        assert before == 32
        for code in attacks:
            reply = (await session.call_tool("execute_code", {"code": code + "\nresult = " + probe.split("result = ")[1]}))
            content = reply.structured_content
            assert content["outcome"] in ("ok", "runtime_error", "validation_error"), content
            if content["outcome"] == "ok":
                assert content["result"] == 32, (code, content)  # the write landed on a copy
            after = (await session.call_tool("execute_code", {"code": probe})).structured_content["result"]
            assert after == 32, code


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
async def test_hostile_children_no_call_bytes_in_fork_server_or_fresh_spare(built_index, tmp_path):
    """Markers sent through the real server in a program, a state value, a skill and its stdout, result
    and state replies are found neither in the fork server's memory nor in a spare forked afterwards."""
    token = uuid.uuid4().hex[:12]
    markers = {name: f'{name}"{token}\\secret' for name in ("program", "state", "skill", "stdout", "result", "reply")}
    rev = {name: value[::-1] for name, value in markers.items()}  # built at run time: absent from the request
    command, args = soak.serve_command("--index", str(built_index))
    async with soak.counted_session(command, args, env=soak.soak_env(tmp_path), log_path=tmp_path / "server.log") as conn:
        session = conn.session
        saved = await session.call_tool("save_skill", {
            "name": "marker_skill", "source": f"def marker_skill():\n    return {markers['skill']!r}\n",
            "description": "returns a marker"})
        assert not saved.is_error, saved
        first = (await session.call_tool("execute_code", {"code": (
            f"seen = {markers['program']!r}\nstate['s'] = {rev['state']!r}[::-1]\nprint({rev['stdout']!r}[::-1])\n"
            f"result = [{rev['result']!r}[::-1], marker_skill()]")})).structured_content
        assert first["outcome"] == "ok" and first["result"] == [markers["result"], markers["skill"]], first
        second = (await session.call_tool("execute_code", {"code": (
            f"result = [state['s'], {rev['reply']!r}[::-1]]")})).structured_content
        assert second["result"] == [markers["state"], markers["reply"]], second
        for _ in range(3):  # spares forked after the marked calls
            assert (await session.call_tool("execute_code", {"code": "result = 1"})).structured_content["result"] == 1
        await anyio.sleep(1.0)
        fork_server = procs.fork_server_of(conn.server_pid)
        spares = [child.pid for child in procs.children_of(fork_server.pid) if child.state != "Z"]
        assert spares, "no spare child to scan"
        needles = {f"{channel}/{form}": needle for channel, marker in markers.items()
                   for form, needle in marker_forms(marker).items()}
        for pid, who in [(fork_server.pid, "fork server"), (spares[-1], "fresh spare child")]:
            found = scan_memory(pid, needles)
            assert found == {}, f"the {who} (pid {pid}) still holds bytes of an earlier call: {sorted(found)}"
