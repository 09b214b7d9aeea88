"""Both Python layers off ("plain" exec with real builtins): the OS layers alone must hold.

Each test performs the attack for real inside a sandbox child and checks its side effect did not
happen: no network, exec, fork, file write, kill of the parent, secret read, or MCP-stream access.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from .conftest import CANARY_VALUE, SandboxHandle, child_pids_of, plain_config

pytestmark = pytest.mark.linux_only


def _attempts(sandbox: SandboxHandle, snippets: dict[str, str], **kwargs) -> dict:
    """Run each snippet inside try/except in one child; returns name -> 'allowed' or the exception."""
    body = ["import os, sys, socket, subprocess, signal", "outcome = {}"]
    for name, code in snippets.items():
        body += [
            "try:",
            *("    " + line for line in code.splitlines()),
            f"    outcome[{name!r}] = 'allowed'",
            "except BaseException as exc:",
            f"    outcome[{name!r}] = type(exc).__name__ + ': ' + str(exc)",
        ]
    body.append("result = outcome")
    result = sandbox.run("\n".join(body), **kwargs)
    assert result.outcome == "ok", result.error
    return result.result


@pytest.mark.model
def test_plain_child_has_no_network(plain_sandbox: SandboxHandle) -> None:
    """It cannot connect to a loopback listener, bind, or open raw sockets; the listener sees nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        outcome = _attempts(plain_sandbox, {
            "connect": f"socket.create_connection(('127.0.0.1', {port}), timeout=2)",
            "connect_raw": f"s = socket.socket(); s.connect(('127.0.0.1', {port}))",
            "bind": "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()",
            "udp": f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))",
            "unix": "socket.socket(socket.AF_UNIX).connect('/run/systemd/private')",
        })
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert all(v.startswith("PermissionError") for v in outcome.values()), outcome


@pytest.mark.model
def test_plain_child_cannot_exec_or_fork(plain_sandbox: SandboxHandle, open_dir: Path) -> None:
    """It cannot run a program or create a process: no marker file, no new child of the fork server."""
    marker = open_dir / "executed"
    outcome = _attempts(plain_sandbox, {
        "system": f"rc = os.system('touch {marker}')\nassert rc == 0, rc",
        "subprocess": f"subprocess.run(['/usr/bin/touch', '{marker}'], check=True)",
        "execv": f"os.execv('/usr/bin/touch', ['touch', '{marker}'])",
        "fork": "pid = os.fork()\nif pid == 0: os._exit(0)",
        "posix_spawn": f"os.posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})",
    })
    assert all(not v.startswith("allowed") for v in outcome.values()), outcome
    assert not marker.exists()
    stats = plain_sandbox.settle()
    assert sorted(child_pids_of(plain_sandbox.client.pid)) == stats.child_pids


@pytest.mark.model
def test_plain_child_cannot_write_files(plain_sandbox: SandboxHandle, open_dir: Path) -> None:
    """It cannot create, write, rename or delete anything, even in a world-writable directory."""
    keep = open_dir / "keep.txt"
    keep.write_text("original")
    keep.chmod(0o666)
    outcome = _attempts(plain_sandbox, {
        "create": f"open('{open_dir}/new.txt', 'w').write('x')",
        "append": f"open('{keep}', 'a').write('x')",
        "truncate": f"os.truncate('{keep}', 0)",
        "unlink": f"os.unlink('{keep}')",
        "mkdir": f"os.mkdir('{open_dir}/d')",
        "symlink": f"os.symlink('/etc/passwd', '{open_dir}/l')",
        "tmp": "open('/tmp/kmcp-escape.txt', 'w').write('x')",
    })
    assert all(not v.startswith("allowed") for v in outcome.values()), outcome
    assert sorted(p.name for p in open_dir.iterdir()) == ["keep.txt"]
    assert keep.read_text() == "original"
    assert not Path("/tmp/kmcp-escape.txt").exists()


@pytest.mark.model
def test_plain_child_cannot_kill_fork_server_or_server(plain_sandbox: SandboxHandle) -> None:
    """It cannot signal the fork server, the server or pid 1; both stay alive and answer."""
    fs_pid = plain_sandbox.client.pid
    outcome = _attempts(plain_sandbox, {
        "parent": "os.kill(os.getppid(), signal.SIGKILL)",
        "server": f"os.kill({os.getpid()}, signal.SIGKILL)",
        "group": f"os.killpg({os.getpgid(0)}, signal.SIGKILL)",
        "init": "os.kill(1, signal.SIGTERM)",
        "all": "os.kill(-1, signal.SIGKILL)",
    })
    assert all(v.startswith("PermissionError") for v in outcome.values()), outcome
    assert plain_sandbox.client.pid == fs_pid
    assert plain_sandbox.run("result = 'alive'").result == "alive"


@pytest.mark.model
def test_plain_child_cannot_read_secrets(plain_sandbox: SandboxHandle, open_dir: Path, canary_env: str) -> None:
    """It cannot read a world-readable canary file, the server's environ, or its own env's secret."""
    canary = open_dir / "canary.txt"
    canary.write_text(CANARY_VALUE)
    canary.chmod(0o644)
    outcome = _attempts(plain_sandbox, {
        "canary": f"outcome['data'] = open('{canary}').read()",
        "server_environ": f"outcome['data2'] = open('/proc/{os.getpid()}/environ').read()",
        "parent_environ": "outcome['data3'] = open(f'/proc/{os.getppid()}/environ').read()",
        "own_env": "assert os.environ.get('KMCP_TEST_CANARY_SECRET') is None, 'leaked'",
        "ssh": "os.listdir(os.path.expanduser('~root/.ssh'))",
        "passwd": "open('/etc/shadow').read()",
    })
    serialized = json.dumps(outcome)
    assert CANARY_VALUE not in serialized
    assert outcome["own_env"] == "allowed"
    for name in ("canary", "server_environ", "parent_environ", "passwd"):
        assert outcome[name].startswith("PermissionError"), (name, outcome[name])


@pytest.mark.model
def test_plain_child_cannot_see_another_sessions_data(plain_sandbox: SandboxHandle) -> None:
    """It cannot read another running child's state through /proc or ptrace."""
    secret = "session-a-secret-77"
    client = plain_sandbox.client

    async def run_both():
        import asyncio

        holder = asyncio.ensure_future(client.execute(plain_sandbox.request(
            "import time\nkept = state['secret']\ntime.sleep(3)\nresult = len(kept)", state={"secret": secret})))
        await asyncio.sleep(1.0)
        pids = (await client.stats()).child_pids
        spy_source = "\n".join([
            "found = []",
            f"for pid in {pids!r}:",
            "    for name in ('environ', 'cmdline', 'mem', 'maps'):",
            "        try:",
            "            with open(f'/proc/{pid}/{name}', 'rb') as fh:",
            "                found.append(fh.read(1 << 20).decode('latin-1'))",
            "        except OSError as exc:",
            "            found.append(type(exc).__name__)",
            "result = found",
        ])
        spy = await client.execute(plain_sandbox.request(spy_source))
        return await holder, spy

    holder, spy = plain_sandbox.loop.run_until_complete(run_both())
    assert holder.outcome == "ok" and holder.result == len(secret)
    assert spy.outcome == "ok", spy.error
    assert secret not in json.dumps(spy.result)
    assert set(spy.result) <= {"PermissionError", "FileNotFoundError"}


def test_plain_child_cannot_reach_mcp_stream(canary_env, open_dir: Path) -> None:
    """It cannot write to the server's fd 1 (the MCP wire) or 2, nor read the server's fd 0."""
    wire = open_dir / "wire"
    log = open_dir / "log"
    saved = [os.dup(0), os.dup(1), os.dup(2)]
    stdin_r, stdin_w = os.pipe()
    os.write(stdin_w, b"SERVER-STDIN-SECRET\n")
    wire_fd = os.open(wire, os.O_WRONLY | os.O_CREAT, 0o600)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(stdin_r, 0)
    os.dup2(wire_fd, 1)
    os.dup2(log_fd, 2)
    handle = None
    try:
        handle = SandboxHandle(plain_config())
        result = handle.run(
            "import os, sys\n"
            "print('MARK-print')\n"
            "sys.stdout.write('MARK-sys-stdout\\n')\n"
            "sys.stdout.flush()\n"
            "os.write(1, b'MARK-fd1\\n')\n"
            "os.write(2, b'MARK-fd2\\n')\n"
            "sys.__stdout__.write('MARK-dunder\\n')\n"
            "sys.__stdout__.flush()\n"
            "result = os.read(0, 100).decode()\n"
        )
    finally:
        if handle is not None:
            handle.close()
        for fd, original in zip((0, 1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
        for fd in (stdin_r, stdin_w, wire_fd, log_fd):
            os.close(fd)
    assert result.outcome == "ok", result.error
    assert result.result == ""  # fd 0 is /dev/null
    assert "MARK" not in wire.read_text()
    assert "MARK" not in log.read_text()


@pytest.mark.model
def test_plain_child_still_searches_embeds_and_reranks(plain_sandbox: SandboxHandle, small_index) -> None:
    """It runs query embedding, faiss search and the ONNX cross-encoder inside the locked-down child."""
    result = plain_sandbox.run(
        "hits = search('retry with exponential backoff', k=3, mode='hybrid', rerank=True)\n"
        "sem = semantic('least recently used cache', k=1)\n"
        "result = {'top': hits[0].path, 'sem': sem[0].path, 'n': len(hits)}\n",
        timeout_s=60,
    )
    assert result.outcome == "ok", result.error
    assert result.result["top"].endswith("retry.py")
    assert result.result["sem"].endswith("cache.py")


# ---------------------------------------------------------------------------------------------
# the shared escape table, through the fork server, in all three policy modes

from tests.sandbox.escapes.attacks import ATTACKS, Attack, Canaries  # noqa: E402

from sandbox import PolicyConfig, PolicyError  # noqa: E402
from sandbox.policy import compile_program  # noqa: E402

MODES = ("full", "restricted_only", "plain")
# Everything an attack may legitimately end in; never internal_error (our fault) or a tripped canary.
CONTAINED_OUTCOMES = {"ok", "runtime_error", "timeout", "memory_limit", "blocked_syscall", "crashed"}
STRICT_SOURCES = frozenset({"cpython-123378", "kmcp-10"})  # attacks on the child's own bookkeeping


@pytest.fixture(scope="module")
def mode_sandboxes(canary_env):
    """One fork server per policy mode, without an index (children need no model warm-up), each
    started when a test first asks for it (the fast tier never uses "restricted_only")."""
    handles: dict[str, SandboxHandle] = {}

    def handle_for(mode: str) -> SandboxHandle:
        if mode not in handles:
            handles[mode] = SandboxHandle(plain_config(policy=PolicyConfig(mode=mode)))
        return handles[mode]

    yield handle_for
    for handle in handles.values():
        handle.close()


@pytest.fixture
def canaries(tmp_path):
    with Canaries(tmp_path) as arranged:
        yield arranged


# The fast tier runs the table in the production mode ("full") and with the OS layers alone ("plain");
# "restricted_only" (RestrictedPython without the AST pre-check), a third of the cases, runs in the full suite.
TABLE_MODES = ["full", pytest.param("restricted_only", marks=pytest.mark.slow), "plain"]


@pytest.mark.parametrize("mode", TABLE_MODES)
@pytest.mark.parametrize("attack", [a for a in ATTACKS if not a.needs_index], ids=lambda a: a.name)
def test_escape_table_through_forkserver(attack: Attack, mode: str, mode_sandboxes, canaries) -> None:
    """It refuses or contains every attack of the table in every mode: no canary tripped, server answers after."""
    handle = mode_sandboxes(mode)
    code = canaries.render(attack)
    try:
        compile_program(code, PolicyConfig(mode=mode))
    except PolicyError as exc:
        assert canaries.tripped(str(exc)) == []
        return
    # An attack only the OS layers stop (a CPU spin, ReDoS, a huge power) runs into its deadline: 1 s
    # proves the kill as well as 3 s did; the rest keep 3 s so a loaded machine never times them out.
    result = handle.run(code, timeout_s=1.0 if attack.layer == "os" else 3.0, mode=mode)
    # In "plain" mode the program owns its child's interpreter (real builtins, real modules) and may
    # corrupt the runner that reports on it: a garbled report is fine there, an escape is not.
    allowed = CONTAINED_OUTCOMES | ({"internal_error"} if mode == "plain" else set())
    assert result.outcome in allowed, result
    assert canaries.tripped(json.dumps(result.to_json(), default=str)) == [], result
    json.dumps(result.to_json(), ensure_ascii=False).encode("utf-8")  # every reply can go on the wire
    if mode != "plain" and attack.source in STRICT_SOURCES:
        # Issue 10's classes: the exact outcome, never crashed or internal_error.
        assert result.outcome == attack.runtime_outcome, result
    after = handle.run("result = sum([20, 22])", mode=mode)
    assert after.outcome == "ok" and after.result == 42
