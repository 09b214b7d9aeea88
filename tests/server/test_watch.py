"""Fresh on every save (issue 12 part 2): `serve --root` watches the tree (watchfiles, inotify) and
merges each change into a per-file delta over the index. The real server over stdio, the real mcp
client, real file operations, a real `git checkout`, a real kill of the watcher process.

No wall-clock assertion: each change is awaited with a generous deadline and then checked by
content (bm25, grep, definitions, read, files agree with the tree).
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from tests.server.conftest import connect

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.slow, pytest.mark.model]

DEADLINE_S = 120
NO_COMPACTION = {"KNOWLEDGE_MCP_COMPACT_AFTER_S": "100000"}

FILES = {
    "src/alpha.py": 'def alpha_fn():\n    """Returns the alphaword marker."""\n    return "alphaword"\n',
    "src/beta.py": 'class BetaStore:\n    """Keeps betaword records."""\n\n    def get(self, key):\n        return key\n',
    "docs/guide.md": "# Guide\n\nHow the alpha and beta modules fit together.\n",
}

PROBE = """
word = {word!r}
result = {{
    "bm25": sorted(set(h.path for h in bm25(word, k=50))),
    "grep": sorted(set(m["path"] for m in grep(word, ignore_case=True, k=1000))),
    "defs": sorted(set(h.path for h in definitions({name!r}))),
    "files": files(),
}}
"""


def _tree(base: Path, files: dict[str, str] = FILES) -> Path:
    root = base / "tree"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


async def _run(session, code: str):
    reply = await session.call_tool("execute_code", {"code": code})
    assert reply.is_error is False, reply.content[0].text
    return reply.structured_content["result"]


async def _eventually(session, code: str, check, what: str):
    """Run `code` until `check(result)` holds (deadline: DEADLINE_S); the last result on failure."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = await _run(session, code)
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {result!r} after {DEADLINE_S} s")
        await anyio.sleep(0.2)


async def _watch(session) -> dict:
    reply = await session.call_tool("index_status", {})
    assert reply.is_error is False, reply.content[0].text
    (entry,) = reply.structured_content["indexes"]
    return entry


async def test_create_modify_delete_move_reach_every_lookup(tmp_path):
    root = _tree(tmp_path)
    async with connect("--root", str(root), "--no-vectors", home=tmp_path, env_extra=NO_COMPACTION) as session:
        assert await _run(session, "result = files()") == sorted(FILES)
        entry = await _watch(session)
        assert entry["watcher"] in ("starting", "watching") and entry["watch"]["delta_files"] == 0

        # create
        (root / "src" / "gamma.py").write_text('def quokka_gamma():\n    return "quokkaword"\n')
        found = await _eventually(session, PROBE.format(word="quokkaword", name="quokka_gamma"),
                                  lambda r: r["bm25"] == ["src/gamma.py"], "a created file")
        assert found["grep"] == ["src/gamma.py"] and found["defs"] == ["src/gamma.py"]
        assert "src/gamma.py" in found["files"]
        assert "quokkaword" in await _run(session, "result = read('src/gamma.py')")

        # modify: the old text disappears from every lookup, the new one appears
        (root / "src" / "alpha.py").write_text('def zebra_fn():\n    """Returns the zebraword marker."""\n    return 1\n')
        await _eventually(session, PROBE.format(word="zebraword", name="zebra_fn"),
                          lambda r: r["bm25"] == ["src/alpha.py"] and r["defs"] == ["src/alpha.py"], "a modified file")
        old = await _run(session, PROBE.format(word="alphaword", name="alpha_fn"))
        assert old["bm25"] == [] and old["grep"] == [] and old["defs"] == []
        assert await _run(session, "result = read('src/alpha.py', 1, 1)") == "def zebra_fn():\n"
        hits = await _run(session, "result = [[h.path, h.start_line, h.end_line, h.text] for h in bm25('zebraword')]")
        assert hits and all(path == "src/alpha.py" and "zebraword" in text for path, _, _, text in hits)

        # delete
        (root / "src" / "beta.py").unlink()
        gone = await _eventually(session, PROBE.format(word="betaword", name="BetaStore"),
                                 lambda r: "src/beta.py" not in r["files"], "a deleted file")
        assert gone["bm25"] == [] and gone["grep"] == [] and gone["defs"] == []
        missing = "try:\n    read('src/beta.py')\n    result = 'still there'\nexcept LookupError:\n    result = 'gone'"
        assert await _run(session, missing) == "gone"

        # move a file into a new folder, then the folder itself
        (root / "lib").mkdir()
        os.rename(root / "src" / "gamma.py", root / "lib" / "gamma.py")
        await _eventually(session, PROBE.format(word="quokkaword", name="quokka_gamma"),
                          lambda r: r["bm25"] == ["lib/gamma.py"] and r["defs"] == ["lib/gamma.py"]
                          and "src/gamma.py" not in r["files"], "a moved file")
        os.rename(root / "lib", root / "pkg")
        moved = await _eventually(session, PROBE.format(word="quokkaword", name="quokka_gamma"),
                                  lambda r: r["grep"] == ["pkg/gamma.py"], "a moved folder")
        assert moved["bm25"] == ["pkg/gamma.py"] and not any(p.startswith("lib/") for p in moved["files"])

        # search_code (the hybrid default, BM25 alone without vectors) sees the delta too
        reply = await session.call_tool("search_code", {"query": "zebraword marker", "rerank": False})
        assert reply.structured_content["hits"][0]["path"] == "src/alpha.py"

        entry = await _watch(session)
        watch = entry["watch"]
        assert entry["watcher"] == "watching" and watch["state"] == "watching" and watch["restarts"] == 0
        assert watch["delta_files"] == 2 and watch["delta_hidden"] >= 1 and watch["last_event_at"]
        assert entry["files"] == len(await _run(session, "result = files()"))


async def test_gitignore_edit_changes_what_is_indexed(tmp_path):
    root = _tree(tmp_path, {**FILES, "generated/out.py": 'IGNORED_TABLE = "ignoredword"\n'})
    async with connect("--root", str(root), "--no-vectors", home=tmp_path, env_extra=NO_COMPACTION) as session:
        probe = PROBE.format(word="ignoredword", name="IGNORED_TABLE")
        assert (await _run(session, probe))["grep"] == ["generated/out.py"]
        (root / ".gitignore").write_text("generated/\n")
        hidden = await _eventually(session, probe, lambda r: "generated/out.py" not in r["files"], "newly ignored")
        assert hidden["bm25"] == [] and hidden["grep"] == [] and ".gitignore" in hidden["files"]
        (root / ".gitignore").write_text("# nothing ignored\n")
        back = await _eventually(session, probe, lambda r: r["grep"] == ["generated/out.py"], "ignored no more")
        assert back["bm25"] == ["generated/out.py"]


async def test_changes_while_nothing_watched_are_found_at_start_then_compacted(tmp_path):
    """A restart finds edits made while no server ran (size + mtime, then hashes; a touched file is
    no change), serves them from the first call, and a compaction folds them into a new version."""
    root = _tree(tmp_path)
    async with connect("--root", str(root), "--no-vectors", home=tmp_path, env_extra=NO_COMPACTION) as session:
        assert await _run(session, "result = files()") == sorted(FILES)
    (root / "src" / "alpha.py").write_text('def alpha_fn():\n    return "offlineword"\n')
    (root / "src" / "beta.py").unlink()
    (root / "src" / "new.py").write_text('def offline_new():\n    return "offlineword"\n')
    os.utime(root / "docs" / "guide.md")  # touched only: same text, not a change
    async with connect("--root", str(root), "--no-vectors", home=tmp_path,
                       env_extra={"KNOWLEDGE_MCP_COMPACT_AFTER_S": "1"}) as session:
        first = await _run(session, PROBE.format(word="offlineword", name="offline_new"))
        assert first["bm25"] == ["src/alpha.py", "src/new.py"] and first["defs"] == ["src/new.py"]
        assert "src/beta.py" not in first["files"]
        entry = await _watch(session)
        version = entry["version"]
        assert entry["watch"]["delta_files"] in (2, 0)  # 0 if a compaction already ran
        deadline = time.monotonic() + DEADLINE_S
        while not ((entry := await _watch(session))["version"] != version and entry["watch"]["delta_files"] == 0
                   and entry["watch"]["delta_hidden"] == 0):
            assert time.monotonic() < deadline, entry
            await anyio.sleep(0.5)
        assert entry["watch"]["compactions"] >= 1 and entry["files"] == 3
        after = await _run(session, PROBE.format(word="offlineword", name="offline_new"))
        assert after["bm25"] == ["src/alpha.py", "src/new.py"] and "src/beta.py" not in after["files"]


def _watcher_pids(root: Path) -> list[int]:
    """Pids of watcher processes (server/watch_events.py) of this root."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"watch_events.py") for arg in argv) and str(root).encode() in argv:
            pids.append(int(entry.name))
    return pids


async def test_a_killed_watcher_is_reported_and_replaced(tmp_path):
    root = _tree(tmp_path)
    async with connect("--root", str(root), "--no-vectors", home=tmp_path, env_extra=NO_COMPACTION) as session:
        await _run(session, "result = 1")
        deadline = time.monotonic() + DEADLINE_S
        while (await _watch(session))["watcher"] != "watching":
            assert time.monotonic() < deadline
            await anyio.sleep(0.2)
        (pid,) = _watcher_pids(root)
        os.kill(pid, signal.SIGKILL)
        # A change made while no watcher runs is found by the rescan that follows the restart.
        (root / "src" / "while_dead.py").write_text('def while_dead():\n    return "deadword"\n')
        deadline = time.monotonic() + DEADLINE_S
        while True:
            entry = await _watch(session)
            if entry["watch"]["restarts"] >= 1 and entry["watcher"] == "watching":
                break
            assert time.monotonic() < deadline, entry
            await anyio.sleep(0.2)
        assert "exited" in (entry["watch"]["last_error"] or "") and _watcher_pids(root) not in ([], [pid])
        await _eventually(session, PROBE.format(word="deadword", name="while_dead"),
                          lambda r: r["bm25"] == ["src/while_dead.py"], "a change made while the watcher was dead")
        (root / "src" / "after.py").write_text('def after_restart():\n    return "afterword"\n')
        await _eventually(session, PROBE.format(word="afterword", name="after_restart"),
                          lambda r: r["defs"] == ["src/after.py"], "a change seen by the new watcher")
        resource = json.loads((await session.read_resource("knowledge://index")).contents[0].text)
        assert resource["indexes"][0]["watch"]["restarts"] >= 1


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@e"})


BURST = 1000


async def test_git_checkout_of_1000_files_becomes_consistent_without_failed_calls(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    (root / "mods").mkdir(parents=True)
    for i in range(BURST):
        (root / "mods" / f"m{i:04d}.py").write_text(f'def handler_{i}():\n    return "mainword {i}"\n')
    (root / "README.md").write_text("# Burst\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "main")
    _git(root, "checkout", "-q", "-b", "other")
    for i in range(BURST):
        (root / "mods" / f"m{i:04d}.py").write_text(f'def handler_{i}():\n    return "branchword {i}"\n')
    _git(root, "commit", "-q", "-am", "other")
    _git(root, "checkout", "-q", "main")

    count = "result = [len(grep('mainword', k=1000)), len(grep('branchword', k=1000)), len(files())]"
    async with connect("--root", str(root), "--no-vectors", home=tmp_path, env_extra=NO_COMPACTION) as session:
        assert await _run(session, count) == [BURST, 0, BURST + 1]
        failures: list[str] = []
        calls = 0
        done = anyio.Event()

        async def stream():
            nonlocal calls
            while not done.is_set():
                reply = await session.call_tool("execute_code", {"code": count})
                calls += 1
                if reply.is_error:
                    failures.append(reply.content[0].text)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            group.start_soon(stream)
            _git(root, "checkout", "-q", "other")
            try:
                await _eventually(session, count, lambda r: r == [0, BURST, BURST + 1], "the branch switch")
            finally:
                done.set()
        assert failures == [] and calls > 0
        entry = await _watch(session)
        assert entry["watch"]["delta_files"] == BURST and entry["pending_changes"] == 0
        _git(root, "checkout", "-q", "main")  # and back: the delta empties
        await _eventually(session, count, lambda r: r == [BURST, 0, BURST + 1], "the switch back")
        deadline = time.monotonic() + DEADLINE_S
        while (await _watch(session))["watch"]["delta_files"] != 0:
            assert time.monotonic() < deadline
            await anyio.sleep(0.2)
