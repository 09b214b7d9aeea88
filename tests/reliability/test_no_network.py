"""The no-network promise without a Docker engine: the real server in a fresh network namespace
(`unshare -n`), as an unprivileged user (`setpriv`), with the index and HOME read-only.

This is what `docker run --network=none --read-only --user ...` gives the image: a full MCP session
(initialize, execute_code with search + rerank, search_code) must work there, and a connection from
that namespace to a listener on this host must fail while it succeeds from outside.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.reliability import soak
from tests.server.conftest import ROOT

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.linux_only,
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
                       reason="needs root, unshare and setpriv (util-linux) to build the namespace"),
]

NOBODY = 65534
# Runs as root inside fresh network + mount namespaces (unshare makes every mount private, so the
# host sees none of this), then becomes the unprivileged user for good. Arguments: index home
# hidden exposed stage CMD...; when the Python install lives under a directory only root may enter
# (a pyenv under /root on these machines), that directory is covered with an empty tmpfs and only
# the install is bound back, read-only, as a system install would be in the image.
JAIL_SCRIPT = """
set -eu
index=$1 home=$2 hidden=$3 exposed=$4 stage=$5
shift 5
if [ -n "$hidden" ]; then
    mount --bind "$exposed" "$stage"
    mount -t tmpfs -o mode=0755,size=1m jail "$hidden"
    mkdir -p "$exposed"
    mount --move "$stage" "$exposed"
    mount -o remount,bind,ro "$exposed"
fi
for dir in "$index" "$home"; do
    mount --bind "$dir" "$dir"
    mount -o remount,bind,ro "$dir"
done
exec setpriv --reuid=%d --regid=%d --clear-groups -- "$@"
""" % (NOBODY, NOBODY)

SEARCH_AND_RERANK = """
hits = search("how are requests rate limited", k=8)
top = rerank("token bucket rate limiting", hits, k=3)
print(compact(top, max_tokens=150))
result = [h.path for h in top]
"""

PROBE = """
import json, socket, sys
outcomes = {}
for host in sys.argv[2:]:
    try:
        socket.create_connection((host, int(sys.argv[1])), timeout=3).close()
        outcomes[host] = "connected"
    except OSError as exc:
        outcomes[host] = f"{type(exc).__name__}: {exc}"
print(json.dumps(outcomes))
"""


def _hidden_python_ancestor() -> tuple[str, str]:
    """(the first directory others may not enter above the Python install, the install), or ("", "")."""
    install = Path(os.path.realpath(sys.base_prefix))
    for folder in reversed(install.parents):
        if folder != Path("/") and not folder.stat().st_mode & 0o001:
            return str(folder), str(install)
    return "", ""


def _jail(index: Path, home: Path, stage: Path, *command: str) -> list[str]:
    hidden, exposed = _hidden_python_ancestor()
    return ["unshare", "--net", "--mount", "--", "sh", "-c", JAIL_SCRIPT, "jail",
            str(index), str(home), hidden, exposed, str(stage), *command]


def _outward_address() -> str | None:
    """This host's address on its default route (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def _read_only_copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    for folder, dirs, files in os.walk(target):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def _tree_state(path: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture
def jail_dirs(built_index):
    """Root-owned read-only index and HOME, a state dir only the unprivileged user can write."""
    base = Path(tempfile.mkdtemp(prefix="knowledge-mcp-nonet-"))
    os.chmod(base, 0o755)  # pytest's tmp_path is 0700: the unprivileged user could not even enter it
    index, home, state, stage = base / "index", base / "home", base / "state", base / "stage"
    _read_only_copy(built_index, index)
    home.mkdir(mode=0o555)
    stage.mkdir()
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    try:
        yield index, home, state, stage
    finally:
        for folder, dirs, files in os.walk(base):
            os.chmod(folder, 0o755)
        shutil.rmtree(base, ignore_errors=True)


async def test_no_network_full_session_as_nobody_with_read_only_index_and_home(jail_dirs, tmp_path):
    """It serves a full session in a network namespace with no interfaces up, where connections fail."""
    index, home, state, stage = jail_dirs
    untouched = (_tree_state(index), _tree_state(home))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KNOWLEDGE_MCP_STATE_DIR": str(state),
        "KNOWLEDGE_MCP_LOG_LEVEL": "INFO",
        "KNOWLEDGE_MCP_MAX_WORKERS": "2",
    }
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    targets = ["127.0.0.1", *filter(None, [_outward_address()]), "1.1.1.1"]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()  # reachable from outside the jail
        command, *args = _jail(index, home, stage, sys.executable, "-m", "server", "serve", "--index", str(index))
        async with soak.counted_session(command, args, env=env, log_path=tmp_path / "server.log") as conn:
            status = Path(f"/proc/{conn.server_pid}/status").read_text()
            assert f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}" in status
            assert os.readlink(f"/proc/{conn.server_pid}/ns/net") != os.readlink("/proc/self/ns/net")

            reply = await conn.session.call_tool("execute_code", {"code": SEARCH_AND_RERANK})
            data = reply.structured_content
            assert data["outcome"] == "ok", data
            assert data["result"][0] == "src/ratelimit.py"
            assert "src/ratelimit.py" in data["stdout"]

            found = await conn.session.call_tool("search_code", {"query": "password hashing", "k": 3})
            assert found.is_error is False, found
            assert found.structured_content["hits"][0]["path"] == "src/auth.py"

            # A process started the same way, while the server runs: no route anywhere, not even to this host.
            probe = subprocess.run(
                _jail(index, home, stage, sys.executable, "-c", PROBE, str(port), *targets),
                capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
            )
            assert probe.returncode == 0, probe.stderr
            outcomes = json.loads(probe.stdout)
            assert set(outcomes) == set(targets)
            assert not [host for host, outcome in outcomes.items() if outcome == "connected"], outcomes
    finally:
        listener.close()
    assert conn.wire_problems() == []
    assert (_tree_state(index), _tree_state(home)) == untouched
