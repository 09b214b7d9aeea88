"""Serving Qdrant-backed indexes through the query broker: the real stdio server, driven by the mcp client.

Same API as in-process (mixed with an in-process index), the key kept out of programs and logs, and the
faults of issue 13: Qdrant unreachable at start, lost mid-call and back, a missing collection, a wrong
key. qdrant-client's local mode backs the index; where a URL is needed, tests/reliability/qdrant_http.py
(a real HTTP process answering Qdrant's REST API from the same store) is started and stopped.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

from tests.server.conftest import ROOT, connect, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

QUERIES = ["token bucket rate limit", "password hashing", "session tokens", "retry with backoff"]


def _cli(*args, home: Path, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=ROOT, env=server_env(home, **(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def qdrant_copy(built_index, corpus_dir, tmp_path_factory):
    """The server corpus (with its vectors, reused) pushed to a qdrant-client local-mode store."""
    base = tmp_path_factory.mktemp("qdrant-serving")
    out = base / "index"
    shutil.copytree(built_index, out, symlinks=True)
    done = _cli("index", "build", corpus_dir, "--out", out, "--backend", "qdrant", "--qdrant-path", base / "store",
                "--collection", "corpus", home=base)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "backend.json").read_text())["path"] == str(base / "store")
    return out


COMPARE = """
out = {}
for q in QUERIES:
    for mode in ('bm25', 'semantic', 'hybrid'):
        out[q + '/' + mode] = [[[h.path, h.start_line] for h in search(q, k=5, mode=mode, rerank=False, index=name)]
                               for name in ('q', 'p')]
    out[q + '/rerank'] = [[h.path for h in search(q, k=3, index=name)] for name in ('q', 'p')]
both = search('token bucket', k=10, rerank=False)
result = {
    'rankings': out,
    'indexes': sorted({h.index for h in both}),
    'definitions': [h.path for h in definitions('TokenBucket', index='q')],
    'outline': [o['symbol'] for o in outline('src/ratelimit.py', index='q')],
    'grep': [g['line'] for g in grep('def allow', index='q')],
    'read': read('src/ratelimit.py', 1, 1, index='q'),
    'files': files(index='q') == files(index='p'),
}
"""


async def test_qdrant_serving_same_api_as_in_process_mixed(qdrant_copy, built_index, tmp_path):
    """It serves a Qdrant-backed index beside an in-process copy of the same corpus: bm25, semantic, hybrid
    and reranked search give the same top 5 on both; a fused search names both indexes; definitions,
    outline, grep, read and files answer from the local sidecar; search_code takes index=; index_status
    names the backend; the audit line counts the call's Qdrant queries."""
    audit = tmp_path / "audit.jsonl"
    async with connect("--index", f"q={qdrant_copy}", "--index", f"p={built_index}", home=tmp_path,
                       env_extra={"KNOWLEDGE_MCP_AUDIT_LOG": str(audit)}) as session:
        reply = await session.call_tool("execute_code", {"code": f"QUERIES = {QUERIES!r}\n" + COMPARE, "timeout_s": 120})
        data = reply.structured_content
        assert reply.is_error is False, data
        result = data["result"]
        for key, (qdrant, in_process) in result["rankings"].items():
            assert qdrant == in_process, key
        assert result["indexes"] == ["p", "q"]
        assert result["definitions"] == ["src/ratelimit.py"]
        assert "TokenBucket" in result["outline"] and result["grep"] and result["files"] is True
        assert result["read"].startswith('"""Rate limiting')
        hits = (await session.call_tool("search_code", {"query": "token bucket", "k": 3, "index": "q"})).structured_content
        assert hits["hits"] and {h["index"] for h in hits["hits"]} == {"q"}
        unknown = await session.call_tool("search_code", {"query": "token bucket", "index": "nope"})
        assert unknown.is_error and "q, p" in json.dumps(unknown.structured_content)
        status = (await session.call_tool("index_status", {})).structured_content
        assert {i["name"]: i["backend"] for i in status["indexes"]} == {"q": "qdrant", "p": "inprocess"}
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines[0]["backend_queries"] >= 4 * 4  # every search on q went through the broker


async def test_qdrant_serving_key_stays_out_of_programs_and_logs(qdrant_copy, tmp_path):
    """It holds the API key (from the state dir's config.toml) only in the server: a program that looks
    everywhere the API reaches (help, search, files, read, grep over every served text, state) finds no
    trace, and neither the audit log nor the server's stderr holds it."""
    key = "kmcp-key-" + uuid.uuid4().hex
    (tmp_path / "state").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / "config.toml").write_text(f'qdrant_api_key = "{key}"\n')
    audit, errlog = tmp_path / "audit.jsonl", tmp_path / "stderr.log"
    program = f"""
needle = {key[::-1]!r}[::-1]
seen = [help()] + [help(name) for name in ('search', 'read', 'grep')]
for q in ('api key', 'qdrant', needle):
    seen += [repr(h) for h in search(q, k=20, rerank=False)]
seen += [read(path) for path in files()]
seen += [repr(grep('kmcp-key', k=1000))]
seen += [repr(state)]
result = [i for i, text in enumerate(seen) if needle in text]
"""
    with open(errlog, "w") as log:
        async with connect("--index", str(qdrant_copy), home=tmp_path, errlog=log,
                           env_extra={"KNOWLEDGE_MCP_AUDIT_LOG": str(audit)}) as session:
            reply = await session.call_tool("execute_code", {"code": program, "timeout_s": 60})
            assert reply.is_error is False, reply.structured_content
            assert reply.structured_content["result"] == []
    assert key not in audit.read_text() and key not in errlog.read_text()


# ------------------------------------------------------------------------------------------ faults


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Endpoint:
    """tests/reliability/qdrant_http.py on a fixed port: start, stop (lost), start again (back)."""

    def __init__(self, store: Path, port: int) -> None:
        self.store, self.port, self.process = store, port, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, key: str | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.qdrant_http", str(self.store), str(self.port), *([key] if key else [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout.readline().strip() == "listening"

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def queries(self) -> int:
        log = self.store.parent / "queries.log"
        return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def remote(tmp_path):
    """A small index (BM25 only) in a local-mode store, its backend record pointed at an endpoint URL."""
    source = tmp_path / "src"
    source.mkdir()
    for i in range(20):
        (source / f"m{i}.py").write_text(f"def handler_{i}():\n    '''Retry the upload {i} with backoff.'''\n    return {i}\n")
    out, store = tmp_path / "index", tmp_path / "store"
    done = _cli("index", "build", source, "--out", out, "--no-vectors", "--backend", "qdrant", "--qdrant-path", store,
                "--collection", "remote", home=tmp_path)
    assert done.returncode == 0, done.stderr
    endpoint = Endpoint(store, _free_port())
    record = json.loads((out / "backend.json").read_text())
    record.update(url=endpoint.url, path=None)
    (out / "backend.json").write_text(json.dumps(record))
    yield out, endpoint
    endpoint.stop()


def _serve_exit(index: Path, home: Path, key: str | None = None) -> subprocess.CompletedProcess:
    extra = {"KNOWLEDGE_MCP_QDRANT_API_KEY": key} if key else {}
    return subprocess.run([sys.executable, "-m", "server", "serve", "--index", str(index)], cwd=ROOT,
                          env=server_env(home, **extra), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)


async def test_qdrant_serving_faults_at_start_exit_3(remote, tmp_path):
    """It exits 3 before the handshake, naming the URL and what to check, when Qdrant is unreachable, when
    it refuses the key (never printed), and when the version's collection is missing."""
    index, endpoint = remote
    done = _serve_exit(index, tmp_path, key="s3cret-wrong")
    assert done.returncode == 3, done.stderr
    assert endpoint.url in done.stderr and "server is running" in done.stderr and "s3cret-wrong" not in done.stderr
    endpoint.start("right-key")
    done = _serve_exit(index, tmp_path, key="s3cret-wrong")
    assert done.returncode == 3, done.stderr
    assert "refused the API key" in done.stderr and endpoint.url in done.stderr and "s3cret-wrong" not in done.stderr
    record = json.loads((index / "backend.json").read_text())
    record["versions"] = {v: "remote-gone" for v in record["versions"]}
    (index / "backend.json").write_text(json.dumps(record))
    done = _serve_exit(index, tmp_path, key="right-key")
    assert done.returncode == 3, done.stderr
    assert "no collection 'remote-gone'" in done.stderr and "--backend qdrant" in done.stderr


LOOP = """
state['before'] = 'kept'
count = 0
for i in range(400):
    count += len(bm25('retry upload backoff', k=3))
    for j in range(30000):
        pass
result = count
"""


async def test_qdrant_serving_lost_mid_call_then_back(remote, tmp_path):
    """It answers a call whose Qdrant goes away mid-call with a runtime_error saying Qdrant was lost (no
    dead server, the session's state kept); once Qdrant is back the next call succeeds; a key Qdrant no
    longer accepts is a runtime_error saying so."""
    index, endpoint = remote
    endpoint.start("right-key")
    async with connect("--index", str(index), home=tmp_path, env_extra={"KNOWLEDGE_MCP_QDRANT_API_KEY": "right-key"}) as session:
        first = await session.call_tool("execute_code", {"code": "state['a'] = 1\nresult = [h.path for h in bm25('upload 7', k=1)]"})
        assert first.structured_content["result"] == ["m7.py"], first.structured_content
        replies = []

        async def call() -> None:
            replies.append(await session.call_tool("execute_code", {"code": LOOP, "timeout_s": 60}))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            start = endpoint.queries()
            deadline = time.monotonic() + 60
            while endpoint.queries() < start + 3 and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            endpoint.stop()  # Qdrant lost in the middle of the call
        lost = replies[0].structured_content
        assert lost["outcome"] == "runtime_error", lost
        assert "unreachable" in lost["error"]["message"] and endpoint.url in lost["error"]["message"]
        assert "lost during this call" in lost["error"]["message"]
        down = (await session.call_tool("execute_code", {"code": "result = state.get('a')"})).structured_content
        assert down["outcome"] == "ok" and down["result"] == 1  # the server and the session live on
        endpoint.start("right-key")  # Qdrant is back: the client reconnects on the next query
        back = (await session.call_tool("execute_code", {"code": "result = [h.path for h in bm25('upload 7', k=1)]"}))
        assert back.structured_content["result"] == ["m7.py"], back.structured_content
        endpoint.stop()
        endpoint.start("rotated-key")
        refused = (await session.call_tool("execute_code", {"code": "bm25('upload', k=1)"})).structured_content
        assert refused["outcome"] == "runtime_error" and "refused the API key (HTTP 401)" in refused["error"]["message"]
        assert "right-key" not in json.dumps(refused)
