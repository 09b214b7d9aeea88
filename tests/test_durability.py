"""Index durability through the real CLI: kill -9 mid-build, corrupted artefacts, racing builds.

Each test drives `knowledge-mcp index build` as a user would and checks what matters to that user:
the current version still loads and answers, the next build succeeds, and a damaged index is
reported by name with the command that rebuilds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "server"]
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _write_corpus(root: Path, n_files: int, tag: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        body = "\n".join(
            f"def {tag}_{i}_{j}(x):\n    '''{WORDS[(i + j) % len(WORDS)]} handler {tag} {i} {j}'''\n    return x + {j}\n"
            for j in range(12)
        )
        (root / f"mod_{i:03d}.py").write_text(body)


def _info(out: Path) -> dict:
    proc = _run("index", "info", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _search_ok(out: Path, query: str) -> list[dict]:
    proc = _run("search", query, "--index", str(out), "--mode", "bm25", "--no-rerank", "--json", "--k", "3")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert hits, "the current version must still answer"
    return hits


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "src", tmp_path / "index"
    _write_corpus(src, 40, "first")
    proc = _run("index", "build", str(src), "--out", str(out), "--no-vectors")
    assert proc.returncode == 0, proc.stderr
    return src, out


def _is_locked(out: Path) -> bool:
    """True while a build holds OUT/.lock (it walks, chunks and embeds under the lock)."""
    try:
        handle = open(out / ".lock", "rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _new_versions(out: Path, known: set[str]) -> list[str]:
    try:
        return [name for name in os.listdir(out / "versions") if name not in known]
    except FileNotFoundError:
        return []


# Where to land the SIGKILL: each predicate sees (out, versions present before the build).
KILL_POINTS = {
    "starting": lambda out, known: True,  # at once: interpreter start-up, imports
    "holding_lock": lambda out, known: _is_locked(out),  # walking, chunking, embedding
    "writing_partial": lambda out, known: any(n.endswith(".partial") for n in _new_versions(out, known)),
    "version_written": lambda out, known: any(not n.endswith(".partial") for n in _new_versions(out, known)),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_build_killed_mid_way_leaves_current_version_intact(built: tuple[Path, Path], point: str) -> None:
    """It keeps the previous version loadable after kill -9 at each build phase, and the next build succeeds."""
    src, out = built
    before = _info(out)
    known = set(os.listdir(out / "versions"))
    _write_corpus(src, 160, "second")  # a larger rebuild, so the write phase lasts long enough to hit
    proc = subprocess.Popen(
        [*CLI, "index", "build", str(src), "--out", str(out), "--no-vectors"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and not KILL_POINTS[point](out, known) and time.monotonic() < deadline:
        time.sleep(0.001)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    after = _info(out)
    if proc.returncode == 0 or after["built_at"] != before["built_at"]:
        # The build switched CURRENT before the kill landed (it won the race): the new version is whole.
        assert after["chunks"] > before["chunks"]
    else:
        assert after["chunks"] == before["chunks"]
    # Either way the current version is one complete version, never a mix of two.
    assert _run("index", "info", str(out), "--verify").returncode == 0
    _search_ok(out, "alpha handler")

    rebuild = _run("index", "build", str(src), "--out", str(out), "--no-vectors")
    assert rebuild.returncode == 0, rebuild.stderr
    assert _search_ok(out, "second handler")
    assert _run("index", "info", str(out), "--verify").returncode == 0
    assert not [n for n in os.listdir(out / "versions") if n.endswith(".partial")], "leftovers of the killed build"


def test_truncated_artefact_is_reported_with_its_name_and_the_rebuild_command(built: tuple[Path, Path]) -> None:
    """It exits 3 naming the damaged file and the command that rebuilds the index."""
    _, out = built
    version_dir = out / "versions" / (out / "CURRENT").read_text().strip()
    victim = version_dir / "chunk_text.bin"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])

    proc = _run("search", "alpha", "--index", str(out), "--mode", "bm25", "--no-rerank")
    assert proc.returncode == 3, proc.stderr
    assert "chunk_text.bin" in proc.stderr
    assert "index build" in proc.stderr


def test_flipped_byte_is_caught_by_checksum(built: tuple[Path, Path]) -> None:
    """It detects same-size corruption by checksum when the index is verified."""
    _, out = built
    version_dir = out / "versions" / (out / "CURRENT").read_text().strip()
    victim = version_dir / "tf_data.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))

    proc = _run("index", "info", str(out), "--verify")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "tf_data.npy" in proc.stderr
    assert "index build" in proc.stderr


@pytest.mark.slow  # waits on backoff, restarts or a racing build: seconds even on an idle machine
def test_racing_builds_are_serialised_or_refused(tmp_path: Path) -> None:
    """It never lets two builds interleave on one output: both succeed in turn, or the loser exits 2."""
    src, out = tmp_path / "src", tmp_path / "index"
    _write_corpus(src, 60, "race")
    procs = [
        subprocess.Popen(
            [*CLI, "index", "build", str(src), "--out", str(out), "--no-vectors"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        loser = next(err for code, err in results if code == 2)
        assert "lock" in loser.lower()
    info = _info(out)
    assert info["chunks"] > 0
    _search_ok(out, "race handler")
