"""Walk rules: gitignore, excludes, symlinks, binaries, size, lock files, secrets, jsonl records."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from index import IndexConfig, SourceError, build_index, walk_sources

# Fake secrets are assembled at run time so this test file itself never looks like one.
PRIVATE_KEY = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA7fake\n-----END RSA " + "PRIVATE KEY-----\n"
SECRET_CONTENTS = {
    "private_key": f"key = '''{PRIVATE_KEY}'''\n",
    "openssh_key": "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n",
    "aws_key_id": "AWS_ID = 'AKIA" + "QWERTYUIOPASDFGH'\n",
    "aws_secret": "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" + "\n",
    "gcp_service_account": json.dumps(
        {"type": "service_account", "private_key_id": "0123456789abcdef" * 2 + "01234567", "client_email": "x@y"}
    ),
    "github_token": "TOKEN = 'ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8'\n",
    "slack_token": "SLACK = 'xoxb-" + "123456789012-abcdefghijkl'\n",
    "google_api_key": "KEY = 'AIza" + "SyA1234567890abcdefghijklmnopqrstuv'\n",
    "stripe_key": "STRIPE = 'sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc'\n",
}
SECRET_NAMES = [
    ".env", ".env.production", "server.pem", "tls.key", "cert.p12", "id_rsa", "id_ed25519", "id_ed25519.pub",
    ".npmrc", ".pypirc", ".netrc", "credentials", "credentials.json", ".aws/config", "kubeconfig",
]
MARKER = "zebracorn"  # a word every harmless file holds, to check what got indexed


def _walk(root: Path, config: IndexConfig | None = None) -> tuple[dict[str, str], Counter[str]]:
    skipped: Counter[str] = Counter()
    docs = walk_sources([root], config or IndexConfig(), lambda path, reason: skipped.update([reason]))
    return {d.path: d.text for d in docs}, skipped


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _all_artefact_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_walk_honours_nested_gitignore_with_negation(tmp_path: Path) -> None:
    """It skips gitignored files and dirs, lets a deeper .gitignore re-include, and lists paths sorted."""
    _write(tmp_path / ".gitignore", "*.log\nbuild/\n")
    _write(tmp_path / "app.py", MARKER)
    _write(tmp_path / "debug.log", MARKER)
    _write(tmp_path / "build" / "out.py", MARKER)
    _write(tmp_path / "sub" / ".gitignore", "!keep.log\n")
    _write(tmp_path / "sub" / "keep.log", MARKER)
    _write(tmp_path / "sub" / "other.log", MARKER)
    docs, skipped = _walk(tmp_path)
    assert list(docs) == [".gitignore", "app.py", "sub/.gitignore", "sub/keep.log"]
    assert skipped["gitignored"] == 3  # debug.log, build/, sub/other.log


def test_walk_honours_gitignore_above_the_source_inside_a_repository(tmp_path: Path) -> None:
    """It applies the enclosing repository's .gitignore when the source is a subdirectory."""
    (tmp_path / ".git").mkdir()
    _write(tmp_path / ".gitignore", "generated_*.py\n")
    _write(tmp_path / "src" / "real.py", MARKER)
    _write(tmp_path / "src" / "generated_api.py", MARKER)
    docs, _ = _walk(tmp_path / "src")
    assert list(docs) == ["real.py"]


def test_walk_indexes_an_explicit_source_that_the_enclosing_gitignore_covers(tmp_path: Path) -> None:
    """It indexes a folder named as the source even when the repository ignores it (a package in .venv),
    while that folder's own .gitignore still applies."""
    (tmp_path / ".git").mkdir()
    _write(tmp_path / ".gitignore", "venv/\n*.log\n")
    package = tmp_path / "venv" / "lib" / "jinja2"
    _write(package / "runtime.py", MARKER)
    _write(package / ".gitignore", "generated.py\n")
    _write(package / "generated.py", MARKER)
    docs, skipped = _walk(package)
    assert sorted(docs) == [".gitignore", "runtime.py"]
    assert skipped["gitignored"] == 1  # its own .gitignore still holds


def test_walk_without_gitignore_indexes_ignored_files(tmp_path: Path) -> None:
    """It reads every .gitignore-listed file when use_gitignore is off; excludes still apply."""
    _write(tmp_path / ".gitignore", "*.log\n")
    _write(tmp_path / "debug.log", MARKER)
    _write(tmp_path / "skip.txt", MARKER)
    docs, skipped = _walk(tmp_path, IndexConfig(use_gitignore=False, excludes=("skip.txt",)))
    assert sorted(docs) == [".gitignore", "debug.log"]
    assert skipped == Counter({"excluded": 1})


def test_walk_skips_vcs_dirs_lock_files_binaries_bad_utf8_and_large_files(tmp_path: Path) -> None:
    """It indexes only small UTF-8 text files and counts each skip reason."""
    _write(tmp_path / "ok.py", MARKER)
    _write(tmp_path / ".git" / "config", MARKER)
    _write(tmp_path / "node_modules" / "x.js", MARKER)
    _write(tmp_path / "package-lock.json", "{}")
    _write(tmp_path / "poetry.lock", MARKER)
    _write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n\0\0\0")
    _write(tmp_path / "latin1.txt", "caf\xe9".encode("latin-1"))
    _write(tmp_path / "big.txt", MARKER + "x" * 2000)
    docs, skipped = _walk(tmp_path, IndexConfig(max_file_bytes=1000))
    assert list(docs) == ["ok.py"]
    assert skipped == Counter({"lock_file": 2, "binary": 1, "not_utf8": 1, "too_large": 1})


def test_walk_applies_repeated_excludes(tmp_path: Path) -> None:
    """It skips paths matching any --exclude glob."""
    for rel in ("src/a.py", "tests/test_a.py", "web/app.min.js", "web/app.js"):
        _write(tmp_path / rel, MARKER)
    docs, skipped = _walk(tmp_path, IndexConfig(excludes=("tests/", "*.min.js")))
    assert list(docs) == ["src/a.py", "web/app.js"]
    assert skipped["excluded"] == 2


def test_walk_never_follows_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    """It skips file and directory symlinks that lead outside the root, and never reads their targets."""
    outside = tmp_path / "outside"
    _write(outside / "secret_notes.txt", "outside-the-root " + MARKER)
    root = tmp_path / "root"
    _write(root / "inside.txt", MARKER)
    os.symlink(outside / "secret_notes.txt", root / "link.txt")
    os.symlink(outside, root / "linkdir")
    os.symlink(root / "inside.txt", root / "alias.txt")
    docs, skipped = _walk(root)
    assert sorted(docs) == ["alias.txt", "inside.txt"]
    assert not any("outside-the-root" in text for text in docs.values())
    assert skipped["symlink_outside_root"] == 1 and skipped["symlink_dir"] == 1


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_walk_skips_secret_files_by_name(tmp_path: Path, bm25_config: IndexConfig, name: str) -> None:
    """It never indexes a file whose name marks it as a credential; its content is in no artefact."""
    secret = f"sentinel-{abs(hash(name))}"
    _write(tmp_path / "ok.py", MARKER)
    _write(tmp_path / name, f"password = {secret}\n")
    out = tmp_path.parent / (tmp_path.name + "-out")
    report = build_index([tmp_path], out, bm25_config)
    assert report.files_indexed == 1
    assert report.skipped.get("secret_name") == 1
    assert secret.encode() not in _all_artefact_bytes(out)


@pytest.mark.parametrize("rule", sorted(SECRET_CONTENTS))
def test_walk_skips_files_holding_secrets_with_a_warning(
    tmp_path: Path, bm25_config: IndexConfig, rule: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It skips a file whose content holds a key or token, warns naming the file, and stores no trace."""
    content = SECRET_CONTENTS[rule]
    _write(tmp_path / "ok.py", MARKER)
    _write(tmp_path / "settings.py", "# innocuous name\n" + content)
    out = tmp_path.parent / (tmp_path.name + "-out")
    with caplog.at_level("WARNING", logger="index.walk"):
        report = build_index([tmp_path], out, bm25_config)
    assert report.skipped == {"secret_content": 1}
    assert any("settings.py" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert not any(content.strip()[:30] in r.getMessage() for r in caplog.records)
    artefacts = _all_artefact_bytes(out)
    assert b"innocuous" not in artefacts
    assert content.strip().encode()[:30] not in artefacts


def test_walk_refuses_a_binary_single_file_source(tmp_path: Path) -> None:
    """It raises SourceError (exit 2) for a binary file named as the source."""
    path = _write(tmp_path / "blob.dat", b"abc\0def")
    with pytest.raises(SourceError, match="binary") as info:
        list(walk_sources([path], IndexConfig()))
    assert info.value.exit_code == 2


def test_walk_refuses_an_invalid_utf8_single_file_source(tmp_path: Path) -> None:
    """It raises SourceError (exit 2) for a single file that is not UTF-8."""
    path = _write(tmp_path / "notes.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(SourceError, match="UTF-8"):
        list(walk_sources([path], IndexConfig()))


def test_walk_reads_a_single_file_relative_to_its_folder(tmp_path: Path) -> None:
    """It indexes one named file with its name as the path, CRLF normalised."""
    path = _write(tmp_path / "notes.md", "# Title\r\nbody\r\n")
    (doc,) = walk_sources([path], IndexConfig())
    assert (doc.path, doc.doc_id, doc.language, doc.text) == ("notes.md", "notes.md", "markdown", "# Title\nbody\n")


def test_walk_refuses_a_missing_source(tmp_path: Path) -> None:
    """It raises SourceError naming the missing path."""
    with pytest.raises(SourceError, match="does not exist"):
        list(walk_sources([tmp_path / "nope"], IndexConfig()))


def test_walk_reads_jsonl_records_with_titles(tmp_path: Path) -> None:
    """It yields one record per line: id as doc_id and path, title carried, blank lines ignored."""
    lines = [{"id": "d1", "title": "First", "text": "alpha"}, {"_id": 7, "title": "Second", "text": "beta"}]
    path = _write(tmp_path / "corpus.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = list(walk_sources([path], IndexConfig()))
    assert [(d.doc_id, d.path, d.title, d.text, d.is_record) for d in docs] == [
        ("d1", "d1", "First", "alpha", True),
        ("7", "7", "Second", "beta", True),
    ]


@pytest.mark.parametrize(
    "bad_line",
    ['{"id": "x", "text": ', '["not", "an", "object"]', '{"title": "no id", "text": "t"}', '{"id": "x"}'],
)
def test_walk_reports_the_line_number_of_a_malformed_record(tmp_path: Path, bad_line: str) -> None:
    """It raises SourceError naming the file and the 1-based line of the bad record."""
    good = json.dumps({"id": "a", "text": "ok"})
    path = _write(tmp_path / "corpus.jsonl", f"{good}\n{good.replace('a', 'b')}\n{bad_line}\n")
    with pytest.raises(SourceError, match=r"corpus\.jsonl:3: "):
        list(walk_sources([path], IndexConfig()))
