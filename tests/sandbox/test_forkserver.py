"""The fork server through its asyncio client: outcomes, deadlines, queue, cancel, crash recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from sandbox import ForkServerClient, ForkServerError, SandboxConfig

from .conftest import SandboxHandle, child_pids_of, plain_config, zombies_of

pytestmark = pytest.mark.linux_only

SLEEP = "import time\ntime.sleep(60)\n"


@pytest.fixture(scope="module")
def sandbox(canary_env) -> SandboxHandle:
    handle = SandboxHandle(plain_config())
    yield handle
    handle.close()


def test_forkserver_runs_a_program_and_returns_result_and_stdout(sandbox: SandboxHandle) -> None:
    """It returns ok with the program's printed output and its ``result`` variable."""
    result = sandbox.run("print('hello')\nresult = {'answer': 6 * 7}")
    assert result.outcome == "ok", result.error
    assert result.result == {"answer": 42}
    assert result.stdout == "hello\n"
    assert set(result.timings_ms) >= {"queue", "execute"}


def test_forkserver_is_single_threaded_and_not_dumpable(sandbox: SandboxHandle) -> None:
    """It reports at most onnxruntime's one idle helper thread and runs with a minimal environment."""
    assert sandbox.ready.threads <= 2
    environ = Path(f"/proc/{sandbox.client.pid}/environ").read_bytes().decode()
    assert "KMCP_TEST_CANARY_SECRET" not in environ  # minimal environment
    assert "OMP_NUM_THREADS=1" in environ


@pytest.mark.slow  # two 1 s deadlines (the escape table's CPU spin keeps a deadline kill in the fast tier)
def test_forkserver_timeout_kills_child_within_deadline(sandbox: SandboxHandle) -> None:
    """It stops an infinite loop and a sleep at the deadline (+1 s), and the child is gone."""
    for source in ("while True:\n    pass\n", SLEEP):
        result = sandbox.run(source, timeout_s=1.0)
        assert result.outcome == "timeout"
        assert "1 s" in result.error["message"]
        # The contract bound (deadline + 1 s), as the fork server saw the child run: queue time and the
        # test's own scheduling on a shared machine are not part of it.
        assert result.timings_ms["execute"] <= (1.0 + 1.0) * 1000
    stats = sandbox.settle()
    assert stats.running == 0
    assert zombies_of(sandbox.client.pid) == []


@pytest.mark.slow  # touches 256 MB page by page: seconds (the escape table's memory bombs stay in the fast tier)
def test_forkserver_maps_memory_bomb_to_memory_limit(sandbox: SandboxHandle) -> None:
    """It answers memory_limit when the program exceeds its address-space budget."""
    # 30 s: touching 256 MB takes ~10 s on this VM when other jobs load it (it is the outcome that counts)
    result = sandbox.run("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n", timeout_s=30.0)
    assert result.outcome == "memory_limit", result
    assert "256 MB" in result.error["message"]


def test_forkserver_stops_huge_power(sandbox: SandboxHandle) -> None:
    """It stops ``10**10**8`` by timeout or memory limit, never hangs."""
    result = sandbox.run("x = 10**10**8\n", timeout_s=1.0)
    assert result.outcome in {"timeout", "memory_limit"}


def test_forkserver_deep_recursion_is_a_clean_runtime_error(sandbox: SandboxHandle) -> None:
    """It reports RecursionError as a runtime_error, not a crash."""
    result = sandbox.run("def f(n):\n    return f(n + 1)\nf(0)\n")
    assert result.outcome == "runtime_error"
    assert result.error["exception"] == "RecursionError"


def test_forkserver_truncates_huge_output_with_bounded_memory(sandbox: SandboxHandle) -> None:
    """It cuts 100 MB of output at the cap, marks truncated, and the fork server's RSS stays bounded."""
    before = sandbox.stats().rss_kb
    result = sandbox.run("line = 'x' * 1_000_000\nfor _ in range(100):\n    print(line)\n", timeout_s=30)
    assert result.outcome == "ok", result.error
    assert result.truncated is True
    assert len(result.stdout.encode()) <= sandbox.config.stdout_cap_bytes
    assert sandbox.stats().rss_kb - before < 50_000


def test_forkserver_names_blocked_syscall(sandbox: SandboxHandle) -> None:
    """It answers blocked_syscall naming a call that is on neither seccomp list."""
    result = sandbox.run("import os\nos.sched_rr_get_interval(0)\n")
    assert result.outcome == "blocked_syscall"
    assert "sched_rr_get_interval" in result.error["message"]


def test_forkserver_maps_signal_death_to_crashed(sandbox: SandboxHandle) -> None:
    """It answers crashed naming the signal when the child kills itself."""
    result = sandbox.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert result.outcome == "crashed"
    assert "SIGSEGV" in result.error["message"]


@pytest.mark.slow  # two 1 s sleeps
def test_forkserver_runs_calls_in_parallel_up_to_max_workers(sandbox: SandboxHandle) -> None:
    """It runs two sleeping calls at once (max_workers=2): both finish in about one sleep."""
    client = sandbox.client
    first, second = sandbox.gather(
        client.execute(sandbox.request("import time\ntime.sleep(1)\nresult = 1")),
        client.execute(sandbox.request("import time\ntime.sleep(1)\nresult = 2")),
    )
    assert (first.result, second.result) == (1, 2)
    # Serialised, one call would have queued behind the other's 1 s sleep.
    assert first.timings_ms["queue"] < 1000 and second.timings_ms["queue"] < 1000


@pytest.mark.slow  # its own fork server and a 0.5 s call to queue behind
def test_forkserver_answers_busy_beyond_queue_cap(canary_env) -> None:
    """It answers busy when max_workers are running and the queue is full; queued calls still run."""
    handle = SandboxHandle(plain_config(max_workers=1, queue_size=1))
    try:
        client = handle.client
        results = handle.gather(
            client.execute(handle.request("import time\ntime.sleep(0.5)\nresult = 'first'")),
            client.execute(handle.request("result = 'queued'")),
            client.execute(handle.request("result = 'third'")),
        )
        outcomes = sorted(r.outcome for r in results)
        assert outcomes == ["busy", "ok", "ok"]
        busy = next(r for r in results if r.outcome == "busy")
        assert "retry" in busy.error["hint"]
        queued = next(r for r in results if r.result == "queued")
        assert queued.timings_ms["queue"] > 100  # it waited for the first; not counted as execute
    finally:
        handle.close()


def test_forkserver_cancel_kills_the_child(sandbox: SandboxHandle) -> None:
    """It kills the child of a cancelled call: its task ends and no process is left running."""

    async def cancel_soon():
        task = asyncio.ensure_future(sandbox.client.execute(sandbox.request(SLEEP, timeout_s=60)))
        await asyncio.sleep(0.5)
        running = (await sandbox.client.stats()).running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    assert sandbox.loop.run_until_complete(cancel_soon()) == 1
    stats = sandbox.settle()
    assert stats.running == 0


def test_forkserver_cancel_by_id_answers_once(sandbox: SandboxHandle) -> None:
    """It answers a call cancelled by id with one crashed result saying so."""

    async def run():
        request = sandbox.request(SLEEP, timeout_s=60)
        task = asyncio.ensure_future(sandbox.client.execute(request))
        await asyncio.sleep(0.5)
        await sandbox.client.cancel(request.request_id)
        return await asyncio.wait_for(task, 10)

    result = sandbox.loop.run_until_complete(run())
    assert result.outcome == "crashed" and "cancelled" in result.error["message"]


@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_forkserver_kill9_fails_inflight_then_recovers(canary_env) -> None:
    """It fails the call in flight with internal_error when the fork server is SIGKILLed; the next call works."""
    handle = SandboxHandle(plain_config())
    try:
        old_pid = handle.client.pid

        async def kill_during_call():
            task = asyncio.ensure_future(handle.client.execute(handle.request(SLEEP, timeout_s=60)))
            await asyncio.sleep(0.5)
            os.kill(old_pid, signal.SIGKILL)
            return await asyncio.wait_for(task, 10)

        lost = handle.loop.run_until_complete(kill_during_call())
        assert lost.outcome == "internal_error"
        assert "retry" in lost.error["hint"]
        after = handle.run("result = 'back'")
        assert after.outcome == "ok" and after.result == "back"
        assert handle.client.pid != old_pid
        time.sleep(0.5)
        assert zombies_of(os.getpid()) == []
    finally:
        handle.close()


def test_forkserver_leaks_no_descriptors_and_leaves_no_zombies(sandbox: SandboxHandle) -> None:
    """It keeps the fork server's and the test process's descriptor counts flat over many calls."""
    sandbox.settle()
    fs_pid = sandbox.client.pid
    own_before = len(os.listdir("/proc/self/fd"))
    fs_before = len(os.listdir(f"/proc/{fs_pid}/fd"))
    for i in range(15):
        source = ["result = 1", "raise ValueError('x')", "import os\nos.kill(os.getpid(), 9)"][i % 3]
        sandbox.run(source)
    stats = sandbox.settle()
    assert len(os.listdir(f"/proc/{fs_pid}/fd")) == fs_before
    assert len(os.listdir("/proc/self/fd")) == own_before
    assert zombies_of(fs_pid) == []
    assert sorted(child_pids_of(fs_pid)) == stats.child_pids


def test_forkserver_close_leaves_no_processes(canary_env) -> None:
    """It stops the fork server and all its children on close()."""
    handle = SandboxHandle(plain_config())
    try:
        pid = handle.client.pid
        children = child_pids_of(pid)
        assert children  # the spare, forked before Ready
    finally:
        handle.close()
    for process in [pid, *children]:
        assert not Path(f"/proc/{process}").exists()


def test_forkserver_start_reports_missing_index_with_exit_code(tmp_path: Path) -> None:
    """It raises ForkServerError carrying the index error's exit code (3) when the index is missing."""
    client = ForkServerClient(SandboxConfig(), index_dir=tmp_path / "missing", log_level="CRITICAL")
    with pytest.raises(ForkServerError) as caught:
        asyncio.run(client.start())
    assert caught.value.exit_code == 3


# ---------------------------------------------------------------------------------------------
# spare-child flavours (a fork server with an index: "bare" and "rerank" children)

RERANK_PROGRAM = """
import os, socket
hits = bm25('retry backoff cache', k=3)
ranked = rerank('call fn again after a failure', hits)
try:
    socket.socket()
    network = 'allowed'
except OSError as exc:
    network = type(exc).__name__
result = {'ranked': [[h.path, h.start_line, round(h.score, 3)] for h in ranked], 'uid': os.getuid(),
          'network': network}
"""


def _needs_index(handle: SandboxHandle) -> None:
    assert handle.ready.has_searcher, "the fork server did not load the index (a broken package must fail, not skip)"


@pytest.mark.model
def test_forkserver_with_an_index_stays_single_threaded_after_warming(plain_sandbox: SandboxHandle) -> None:
    """It opens and warms the query encoder and the cross-encoder before forking, yet runs no thread
    beyond onnxruntime's idle helper."""
    _needs_index(plain_sandbox)
    assert plain_sandbox.ready.threads <= 2
    assert plain_sandbox.stats().threads <= 2
    hits = plain_sandbox.run("result = [h.path for h in semantic('retry after a failure', k=2)]")
    assert hits.outcome == "ok" and hits.result, hits.error  # a child embeds with the shared session
    assert plain_sandbox.stats().threads <= 2


@pytest.mark.model
def test_forkserver_child_reranks_with_the_shared_session_under_every_os_layer(
    plain_sandbox: SandboxHandle, small_index: Path
) -> None:
    """Any spare child reranks (on two threads it starts itself, after uid drop, Landlock and
    seccomp) with exactly the scores of a searcher opened in this process; seccomp still holds."""
    from search import Searcher

    _needs_index(plain_sandbox)
    first = plain_sandbox.run(RERANK_PROGRAM, timeout_s=60)
    second = plain_sandbox.run(RERANK_PROGRAM, timeout_s=60)
    assert first.outcome == "ok", first.error
    assert second.outcome == "ok", second.error
    searcher = Searcher.open(small_index)
    expected = [[h.path, h.start_line, round(h.score, 3)]
                for h in searcher.rerank("call fn again after a failure", searcher.bm25("retry backoff cache", k=3))]
    assert first.result["ranked"] == second.result["ranked"] == expected
    assert first.result["network"] == "PermissionError"  # seccomp still holds after the rerank threads
    if os.geteuid() == 0:
        assert first.result["uid"] == plain_sandbox.config.drop_uid


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.slow  # measures an idle second
def test_forkserver_sleeps_while_idle(sandbox: SandboxHandle) -> None:
    """It blocks in poll when there is nothing to do: an idle second costs it almost no CPU time."""
    assert sandbox.run("result = 1").result == 1
    sandbox.settle()
    before = _cpu_seconds(sandbox.client.pid)
    time.sleep(1.0)
    used = _cpu_seconds(sandbox.client.pid) - before
    assert used < 0.2, f"the idle fork server used {used:.2f} s of CPU in 1 s: it is spinning"


@pytest.mark.model
def test_forkserver_sleeps_while_a_long_call_runs(plain_sandbox: SandboxHandle) -> None:
    """It blocks in poll while a call runs past the spare-refill delay: the second of a sleeping
    call costs the fork server almost no CPU time (the child keeps both cores for its own work)."""
    plain_sandbox.settle()
    pid = plain_sandbox.client.pid
    before = _cpu_seconds(pid)
    result = plain_sandbox.run("import time\ntime.sleep(1.0)\nresult = 1", timeout_s=10)
    used = _cpu_seconds(pid) - before
    assert result.outcome == "ok", result.error
    assert used < 0.3, f"the fork server used {used:.2f} s of CPU during a 1 s call: it is spinning"


FIND_SOCKET = """
import os, stat, struct, json
sock = None
for fd in range(3, 64):
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            sock = fd
            break
    except OSError:
        pass
"""


@pytest.mark.parametrize(("forgery", "outcome"), [
    # a small frame over the fork server's 1 MiB cap: the child is killed for breaking the protocol
    ("os.write(sock, struct.pack('>II', 2 << 20, 0) + b'{' * 100)\nimport time\ntime.sleep(5)", "internal_error"),
    # a frame with a blob (only bodies may be large): same
    ("os.write(sock, struct.pack('>II', 2, 5) + b'{}12345')\nimport time\ntime.sleep(5)", "internal_error"),
    # a result body announced but cut short, then death: crashed, and the half-read memfd is closed
    ("payload = json.dumps({'type': 'result_start', 'body_bytes': 1 << 20}).encode()\n"
     "os.write(sock, struct.pack('>II', len(payload), 0) + payload + b'x' * 1000)\nos._exit(3)", "crashed"),
])
def test_forkserver_survives_a_child_that_forges_frames(forgery: str, outcome: str) -> None:
    """It answers a child that writes forged frames on its socket (plain mode: the program owns the child)
    with one result, keeps serving, and holds no extra descriptor afterwards."""
    # Its own fork server: the descriptor count is compared before and after, which another test's
    # leftovers in a shared one would disturb.
    handle = SandboxHandle(plain_config(spare_children=1))
    try:
        handle.run("result = 1")
        before = handle.settle().open_fds
        result = handle.run(FIND_SOCKET + forgery, timeout_s=10.0)
        assert result.outcome == outcome, result
        assert handle.run("result = 2").result == 2
        assert handle.settle().open_fds == before
    finally:
        handle.close()


def test_forkserver_child_internal_error_is_logged_by_the_server_and_stripped(sandbox: SandboxHandle, caplog) -> None:
    """It answers a child whose runner breaks with internal_error and an incident id only; the traceback
    reaches the server's log (the fork server never reads it)."""
    import logging

    caplog.set_level(logging.ERROR, logger="sandbox.forkserver_client")
    # plain mode: the program owns its interpreter and breaks the runner that reports on it
    result = sandbox.run("import sandbox.runner as r\nr.RunResult = None\nresult = 1")
    assert result.outcome == "internal_error", result
    assert result.error["message"].startswith("internal error ") and not result.error["traceback"]
    incident = result.error["message"]
    logged = [r.getMessage() for r in caplog.records if incident in r.getMessage()]
    assert logged and "Traceback" in logged[0] and "TypeError" in logged[0]
    assert sandbox.run("result = 2").result == 2
