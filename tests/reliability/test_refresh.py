"""An index refresh while calls stream in: `serve --root DIR`, files edited and added mid-stream.

Every call checks the index it runs on for consistency (each hit's chunk text equals the lines its
file holds at those line numbers in the same version, and the file count is one of the two real
ones); the edit moves every line of a file, so a half-switched index would show.
"""

import shutil

import anyio
import pytest

from tests.reliability import soak

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

CONSISTENCY_PROGRAM = """
hits = bm25('zanzibar quokka token bucket cache expiry password', k=20)
mismatched = [h.id for h in hits if read(h.path, h.start_line, h.end_line).strip() != h.text.strip()]
result = {
    "files": len(files()),
    "mismatched": mismatched,
    "found": sorted(set(h.path for h in hits if "zanzibar" in h.text)),
}
"""
NEW_FILE = "src/zanzibar.py"
EDITED_FILE = "src/cache.py"
EXPECTED_FOUND = sorted([NEW_FILE, EDITED_FILE])
STREAMS = 2
CALLS_BEFORE_EDIT = 3  # per stream
CALLS_AFTER_REFRESH = 4  # per stream


async def test_refresh_during_call_stream_never_fails_or_mixes_versions(corpus_dir, tmp_path):
    """It keeps every call ok and consistent while the root is re-indexed, then finds the new content."""
    root = tmp_path / "project"
    shutil.copytree(corpus_dir, root)
    command, args = soak.serve_command("--root", str(root))
    histories = {stream: [] for stream in range(STREAMS)}
    edited = anyio.Event()

    async with soak.counted_session(command, args, env=soak.soak_env(tmp_path), log_path=tmp_path / "server.log") as conn:
        async def stream(number):
            after_refresh = 0
            with anyio.fail_after(300):
                while after_refresh < CALLS_AFTER_REFRESH:
                    reply = await conn.session.call_tool("execute_code", {"code": CONSISTENCY_PROGRAM})
                    data = reply.structured_content
                    assert data["outcome"] == "ok", data
                    histories[number].append((edited.is_set(), data["result"]))
                    if data["result"]["found"]:
                        after_refresh += 1

        async def edit():
            while min(len(history) for history in histories.values()) < CALLS_BEFORE_EDIT:
                await anyio.sleep(0.1)  # let both streams run on the first version
            cache = root / EDITED_FILE
            # Prepended lines shift every line of the file: stale line numbers would not match.
            cache.write_text("# zanzibar quokka: a marker added while calls stream in\n\n" + cache.read_text())
            (root / NEW_FILE).write_text('def zanzibar_quokka():\n    """A zanzibar quokka helper."""\n    return 42\n')
            edited.set()

        async with anyio.create_task_group() as group:
            for number in range(STREAMS):
                group.start_soon(stream, number)
            group.start_soon(edit)

    assert conn.wire_problems() == []
    for history in histories.values():
        results = [result for _, result in history]
        assert all(result["mismatched"] == [] for result in results), results
        # One stream's calls are sequential: once it sees the new version it never sees the old one.
        versions = [(result["files"], tuple(result["found"])) for result in results]
        assert set(versions) <= {(6, ()), (7, tuple(EXPECTED_FOUND))}, versions
        first_new = versions.index((7, tuple(EXPECTED_FOUND)))
        assert all(version == (6, ()) for version in versions[:first_new])
        assert all(version[0] == 7 for version in versions[first_new:])
        assert any(not was_edited for was_edited, _ in history), "no call ran on the first version"
