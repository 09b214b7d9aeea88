"""Hostile programs through the real `knowledge-mcp serve`, driven by the mcp client (issue 10, classes 1, 4, 6, 7).

Pass: the mcp client parses every reply as a tool result (no lost reply, no JSON-RPC error), no reply
is `crashed` or `internal_error`, and what one program wrote into a shared library object is not
seen by the next program.
"""

import pytest

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
