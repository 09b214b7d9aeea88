"""Third-party MCP clients drive the server as a user would: the MCP Inspector CLI and the fastmcp CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import ROOT, server_env

pytestmark = [pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"  # the version verified to run on Node 20 here
FASTMCP = Path(sys.executable).parent / "fastmcp"


def _serve_command(index):
    return [sys.executable, "-m", "server", "serve", "--index", str(index)]


def _run(args, home, timeout=600):
    return subprocess.run(args, cwd=ROOT, env=server_env(home), capture_output=True, text=True, timeout=timeout)


def test_clients_mcp_inspector_lists_and_calls(built_index, tmp_path):
    """It answers the MCP Inspector CLI's tools/list and tools/call."""
    assert shutil.which("npx"), "Node/npx is required for the MCP Inspector test"
    base = ["npx", "-y", INSPECTOR, "--cli", *_serve_command(built_index)]
    listed = _run([*base, "--method", "tools/list"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {tool["name"] for tool in json.loads(listed.stdout)["tools"]}
    assert names == {"execute_code", "search_code", "save_skill", "delete_skill", "lookup_code", "index_status"}
    called = _run([*base, "--method", "tools/call", "--tool-name", "execute_code",
                   "--tool-arg", "code=result = files('src/*.py')"], tmp_path)
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert reply["structuredContent"]["result"] == ["src/auth.py", "src/cache.py", "src/ratelimit.py"]


def test_clients_fastmcp_lists_and_calls(built_index, tmp_path):
    """It answers `fastmcp list` and `fastmcp call` over stdio."""
    assert FASTMCP.exists(), "fastmcp is in the test extra: pip install -e '.[test]'"
    command = " ".join(_serve_command(built_index))
    listed = _run([str(FASTMCP), "list", "--command", command, "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr + listed.stdout
    assert "search_code" in listed.stdout and "execute_code" in listed.stdout
    called = _run([str(FASTMCP), "call", "--command", command, "--target", "execute_code",
                   "--input-json", json.dumps({"code": "print(6 * 7)"}), "--json"], tmp_path)
    assert called.returncode == 0, called.stderr + called.stdout
    assert "42" in called.stdout
