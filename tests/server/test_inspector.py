"""MCP Inspector's CLI (the reference client) against the real stdio server: error replies fit the schema.

The Python SDK's client skips output-schema validation for `isError` replies; Inspector does not, and
rejected a load-failure reply before. Installed by `scripts/install.sh` (npm); skipped without npm.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import ROOT, server_env

INSPECTOR = Path(sys.prefix) / "inspector" / "node_modules" / ".bin" / "mcp-inspector"  # beside the venv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not INSPECTOR.exists(), reason="MCP Inspector not installed (scripts/install.sh installs it with npm)"),
]


def _inspect(home: Path, serve_args: list[str], tool: str, **arguments: str) -> subprocess.CompletedProcess[str]:
    env = server_env(home)
    command = [str(INSPECTOR), "--cli", *[f"-e={k}={v}" for k, v in env.items() if k.startswith("KNOWLEDGE_MCP")],
               sys.executable, "-m", "server", "serve", *serve_args,
               "--method", "tools/call", "--tool-name", tool, *[f"--tool-arg={k}={v}" for k, v in arguments.items()]]
    return subprocess.run(command, cwd=ROOT, env={**env, "PATH": env["PATH"]}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.model  # built_index embeds the corpus
def test_inspector_accepts_a_runtime_error_reply_of_execute_code(built_index, tmp_path):
    """It gets a runtime_error reply that Inspector validates against execute_code's output schema."""
    done = _inspect(tmp_path, ["--index", str(built_index)], "execute_code", code="raise ValueError('no')")
    assert done.returncode == 0, done.stdout + done.stderr
    reply = json.loads(done.stdout)
    assert reply["isError"] is True
    assert reply["structuredContent"]["outcome"] == "runtime_error"


def test_inspector_accepts_a_load_failure_reply_of_every_tool(tmp_path):
    """It gets, for a root that cannot be indexed, an error reply each tool's output schema accepts."""
    empty = tmp_path / "empty"
    empty.mkdir()
    calls = {
        "execute_code": {"code": "result = 1"},
        "search_code": {"query": "retry"},
        "save_skill": {"name": "top", "source": "def top():\n    return 1\n", "description": "one"},
        "delete_skill": {"name": "top"},
    }
    for tool, arguments in calls.items():
        done = _inspect(tmp_path, ["--root", str(empty)], tool, **arguments)
        assert done.returncode == 0, (tool, done.stdout + done.stderr)
        reply = json.loads(done.stdout)
        assert reply["isError"] is True, (tool, reply)
        assert "could not load" in reply["content"][0]["text"], (tool, reply)
