"""Several named indexes served at once: the real server over stdio, driven by the mcp SDK client."""

import json
import subprocess
import sys

import pytest

from tests.server.conftest import ROOT, connect, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.linux_only, pytest.mark.model, pytest.mark.slow]

# A second repository: a different topic, and one path (docs/guide.md) that the first corpus also holds.
RUNBOOK_FILES = {
    "ops/backup.sh": "#!/bin/sh\n# Nightly PostgreSQL backup: pg_dump to object storage, keep 14 days.\n"
                     "pg_dump --format=custom \"$DATABASE_URL\" > /backups/nightly.dump\n",
    "ops/restore.md": "# Restoring a backup\n\nDownload the nightly dump and run pg_restore into an empty database.\n",
    "docs/guide.md": "# Runbook guide\n\nOn-call engineers restore backups with ops/restore.md.\n",
}


@pytest.fixture(scope="module")
def runbook_index(tmp_path_factory):
    """The second repository indexed through the CLI."""
    source = tmp_path_factory.mktemp("runbook")
    for rel_path, text in RUNBOOK_FILES.items():
        (source / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (source / rel_path).write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("runbook-index") / "index"
    done = subprocess.run(
        [sys.executable, "-m", "server", "index", "build", str(source), "--out", str(out)],
        cwd=ROOT, env=server_env(tmp_path_factory.mktemp("runbook-home")), capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


PROGRAM = """
both = search("nightly database backup", k=10, rerank=False)
only_app = bm25("token bucket", k=5, index="app")
listed = bm25("backup", k=5, index=["app", "ops"])
try:
    bm25("backup", index="nope")
    unknown = None
except ValueError as exc:
    unknown = str(exc)
try:
    read("docs/guide.md")
    ambiguous = None
except LookupError as exc:
    ambiguous = str(exc)
result = {
    "both": [[h.index, h.path] for h in both],
    "only_app": sorted({h.index for h in only_app}),
    "listed": [h.index for h in listed],
    "unknown": unknown,
    "ambiguous": ambiguous,
    "ops_guide": read("docs/guide.md", index="ops").splitlines()[0],
    "files_ops": files(index="ops"),
    "files_all": len(files()),
}
"""


async def test_indexes_two_served_fused_named_and_checked(built_index, runbook_index, tmp_path):
    """It serves two named indexes: a fused search draws from both and names each hit's index, index=
    narrows to one, an unknown name is a ValueError listing the served ones, and read() of a path both
    hold is a LookupError naming them."""
    async with connect("--index", f"app={built_index}", "--index", f"ops={runbook_index}", home=tmp_path) as session:
        reply = await session.call_tool("execute_code", {"code": PROGRAM})
        data = reply.structured_content
        assert reply.is_error is False, data
        result = data["result"]
        assert ["ops", "ops/backup.sh"] in result["both"][:2]  # each index's best is rank 1 of its list
        assert {index for index, _ in result["both"]} == {"app", "ops"}
        assert result["only_app"] == ["app"]
        assert set(result["listed"]) <= {"app", "ops"} and "ops" in result["listed"]
        assert "'nope'" in result["unknown"] and "app, ops" in result["unknown"]
        assert "docs/guide.md" in result["ambiguous"] and "app, ops" in result["ambiguous"]
        assert result["ops_guide"] == "# Runbook guide"
        assert result["files_ops"] == sorted(RUNBOOK_FILES)
        assert result["files_all"] == 6 + 2  # docs/guide.md is listed once

        search_reply = await session.call_tool("search_code", {"query": "restore a backup", "k": 3, "rerank": False})
        hits = search_reply.structured_content["hits"]
        assert "ops" in {hit["index"] for hit in hits} and {hit["index"] for hit in hits} <= {"app", "ops"}

        described = json.loads((await session.read_resource("knowledge://index")).contents[0].text)
        assert [(item["name"], item["files"]) for item in described["indexes"]] == [("app", 6), ("ops", 3)]


async def test_indexes_plain_index_is_default(built_index, tmp_path):
    """It names an index served without a name 'default' in every hit."""
    async with connect("--index", str(built_index), home=tmp_path) as session:
        reply = await session.call_tool(
            "execute_code", {"code": "result = sorted({h.index for h in bm25('token bucket', index='default')})"}
        )
        assert reply.structured_content["result"] == ["default"], reply.structured_content


def test_indexes_repeated_name_is_a_usage_error(built_index, runbook_index, tmp_path):
    """It refuses two indexes under one name with exit 2 and a message saying how to name them."""
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--index", f"a={built_index}", "--index", f"a={runbook_index}"],
        cwd=ROOT, env=server_env(tmp_path), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and "NAME=DIR" in done.stderr, done.stderr
