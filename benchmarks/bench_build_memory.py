"""Memory at scale (issue 12): peak RSS of `index build` on the large tree, and the fork server's PSS
after 100 mixed calls over stdio.

Build: `knowledge-mcp index build TREE --out DIR --force` with `--no-vectors` or `--vectors later` (the
keyword index; embedding the whole tree takes hours on 2 cores), run as a child and reaped with
wait4, so its peak RSS is the kernel's ru_maxrss (goal <= 3 GB). Serving: `serve --index DIR`, then
100 calls cycling through search_code (bm25, hybrid), lookup_code grep (literal and regex), definitions,
and execute_code programs that call bm25, grep, read and files; the fork server's PSS (its share of
every page, memory maps of the index included) from /proc/PID/smaps_rollup after the last call
(goal <= 2.5 GB), the same summed over it and its warm spare children (which share its pages, so
PSS splits them), and the server's own. Run (nice'd, alone):
`nice -n 10 python benchmarks/bench_build_memory.py [--tree DIR] [--vectors none|later] [--calls 100]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from bench_large_start import Wire
from large_tree import describe_tree, ensure_tree

GOAL_BUILD_RSS_MB = 3 * 1024
GOAL_SERVE_PSS_MB = 2.5 * 1024
CALLS = (
    ("search_code", {"query": "class QuerySet lazy database lookup", "mode": "bm25", "rerank": False, "k": 10}),
    ("lookup_code", {"grep": "def __init__\\(self, request", "k": 50}),
    ("search_code", {"query": "parse the timezone offset of a datetime", "mode": "hybrid", "rerank": False, "k": 10}),
    ("lookup_code", {"grep": "[Cc]onnection(Error|Refused)", "k": 100}),
    ("lookup_code", {"definitions": "QuerySet.filter"}),
    ("execute_code", {"code": "hits = bm25('retry backoff exponential', k=20)\n"
                              "result = [read(h.path, h.start_line, h.start_line + 3) for h in hits[:3]]"}),
    ("execute_code", {"code": "result = len(grep('TODO', k=1000)) + len(files('django/**/*.py'))"}),
    ("lookup_code", {"outline": "django/db/models/query.py"}),
)


def _env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "KNOWLEDGE_MCP_STATE_DIR": str(home / "state"), "KNOWLEDGE_MCP_CACHE_DIR": str(home / "cache"),
            "KNOWLEDGE_MCP_LOG_LEVEL": "WARNING"}


def measure_build(tree: Path, out: Path, vectors: str, env: dict[str, str]) -> dict[str, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one `index build` child."""
    flag = ["--no-vectors"] if vectors == "none" else ["--vectors", "later"]
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "server", "index", "build", str(tree), "--out", str(out),
                                "--force", *flag], cwd=common.REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"index build exited {process.returncode}")
    return {"seconds": round(time.perf_counter() - started, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _rollup_mb(pid: int) -> dict[str, float]:
    """Rss and Pss of process `pid` in MB (/proc/PID/smaps_rollup)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss") and rest.strip().endswith("kB"):
            values[name.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def measure_serving(index: Path, calls: int, env: dict[str, str]) -> dict[str, object]:
    """PSS of the fork server (and of the server) after `calls` mixed calls; errors counted."""
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--index", str(index)], cwd=common.REPO,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wire = Wire(process)
    errors = 0
    try:
        assert wire.reply(wire.send("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                   "clientInfo": {"name": "bench", "version": "0"}}), 120)
        wire.send("notifications/initialized", notify=True)
        started = time.perf_counter()
        for number in range(calls):
            name, arguments = CALLS[number % len(CALLS)]
            reply = wire.reply(wire.send("tools/call", {"name": name, "arguments": arguments}), 300)
            if reply is None or "error" in reply or (reply.get("result") or {}).get("isError"):
                errors += 1
        seconds = time.perf_counter() - started
        time.sleep(0.5)  # the last child is reaped
        fork_servers = [pid for pid in _children(process.pid) if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        fork_server = fork_servers[0] if fork_servers else max(_children(process.pid))
        # The warm spare children share the fork server's pages (PSS splits them): their sum is what the
        # sandbox side costs the machine.
        family = [fork_server, *_children(fork_server)]
        family_pss = round(sum(_rollup_mb(pid).get("pss_mb", 0.0) for pid in family), 1)
        return {"calls": calls, "errors": errors, "seconds": round(seconds, 1),
                "fork_server": _rollup_mb(fork_server), "fork_server_with_children_pss_mb": family_pss,
                "processes": len(family), "server": _rollup_mb(process.pid)}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="source tree (default: the pinned large tree)")
    parser.add_argument("--vectors", choices=("none", "later"), default="later")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--serve-only", action="store_true", help="measure serving over the index already at --out")
    parser.add_argument("--out", type=Path, help="build the index here and keep it (default: a temporary folder; "
                                                  "bench_bm25s.py reuses benchmarks/.cache/large-tree-bm25)")
    args = parser.parse_args()
    if args.serve_only and not args.out:
        parser.error("--serve-only needs --out DIR (an index built earlier)")
    tree = args.tree or ensure_tree()
    facts = describe_tree(tree)
    home = Path(tempfile.mkdtemp(prefix="bench-build-memory-"))
    try:
        env = _env(home)
        out = args.out.absolute() if args.out else home / "index"
        metrics: dict[str, object] = {"tree": facts}
        goals = {}
        if not args.serve_only:
            build = metrics["build"] = measure_build(tree, out, args.vectors, env)
            goals["build_peak_rss_mb"] = (build["peak_rss_mb"], "<=", GOAL_BUILD_RSS_MB)
        if not args.skip_serve:
            serving = measure_serving(out, args.calls, env)
            metrics["serving"] = serving
            goals["fork_server_pss_mb"] = (serving["fork_server"]["pss_mb"], "<=", GOAL_SERVE_PSS_MB)
            goals["fork_server_with_children_pss_mb"] = (serving["fork_server_with_children_pss_mb"], "<=",
                                                         GOAL_SERVE_PSS_MB)
            goals["call_errors"] = (serving["errors"], "==", 0)
        common.emit("build_memory", {"vectors": args.vectors, "calls": args.calls}, common.with_goals(metrics, goals))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
