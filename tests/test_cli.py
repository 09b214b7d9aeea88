"""The `knowledge-mcp` CLI end to end: every command, every exit code, no partial index left behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.corpus import write_corpus

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "knowledge-mcp"


def run_cli(*args, env_extra=None, stdin=None, tmp_home=None, timeout=300):
    """Run `python -m server ARGS` with a private state/cache dir; returns the CompletedProcess."""
    home = tmp_home or ROOT / ".pytest-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KNOWLEDGE_MCP_STATE_DIR": str(home / "state"),
        "KNOWLEDGE_MCP_CACHE_DIR": str(home / "cache"),
        "KNOWLEDGE_MCP_LOG_LEVEL": "WARNING",
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "server", *map(str, args)], cwd=ROOT, env=env, input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )


def assert_no_index(out_dir: Path):
    """Nothing servable was left behind: no directory, or one without a current version."""
    assert not (out_dir / "CURRENT").exists(), f"partial index left in {out_dir}: {sorted(os.listdir(out_dir))}"


def one_line_error(done):
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert lines, done.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def bm25_index(corpus, home, tmp_path_factory):
    """A BM25-only index of the test corpus, built once through the CLI."""
    out = tmp_path_factory.mktemp("idx") / "bm25"
    done = run_cli("index", "build", corpus, "--out", out, "--no-vectors", tmp_home=home)
    assert done.returncode == 0, done.stderr
    return out


def test_cli_console_script_prints_help():
    """It installs the `knowledge-mcp` console script, which lists every command."""
    done = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("index", "search", "serve", "exec"):
        assert command in done.stdout


def test_cli_index_build_reports_and_info_summarises(bm25_index, home):
    """It builds an index and `index info --json` reports files, chunks and the format version."""
    done = run_cli("index", "info", bm25_index, "--json", tmp_home=home)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["files"] == 6 and info["chunks"] >= 6
    assert info["format_version"] is not None and info["built_at"]
    human = run_cli("index", "info", bm25_index, tmp_home=home)
    assert human.returncode == 0 and "chunks:" in human.stdout


def test_cli_search_prints_hits_and_json(bm25_index, home):
    """It prints ranked hits for a query, and the contract's Hit shape with --json."""
    done = run_cli("search", "token bucket rate limit", "--index", bm25_index, "--mode", "bm25", "--no-rerank",
                   "--json", tmp_home=home)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert hits[0]["path"] == "src/ratelimit.py"
    assert set(hits[0]) == {"id", "doc_id", "path", "start_line", "end_line", "language", "title", "score", "text",
                            "kind", "symbol", "index"}
    assert hits[0]["index"] == "default" and hits[0]["kind"] in ("function", "class", "module", "constant")
    human = run_cli("search", "password hash", "--index", bm25_index, "--mode", "bm25", "--no-rerank",
                    "--path", "src/**", "--language", "python", tmp_home=home)
    assert human.returncode == 0 and "src/auth.py:" in human.stdout


def test_cli_search_batch_writes_trec_run(bm25_index, home, tmp_path):
    """It writes `qid Q0 docid rank score tag` lines, each docid once per query."""
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "token bucket"}\n{"_id": "q2", "text": "express health check"}\n')
    run = tmp_path / "out" / "run.txt"
    done = run_cli("search", "--index", bm25_index, "--queries", queries, "--run-out", run, "--mode", "bm25",
                   "--no-rerank", "--k", "3", tmp_home=home)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in run.read_text().splitlines()]
    assert all(len(parts) == 6 and parts[1] == "Q0" for parts in lines)
    q1 = [parts for parts in lines if parts[0] == "q1"]
    assert q1[0][2] == "src/ratelimit.py" and len({p[2] for p in q1}) == len(q1)


def test_cli_search_batch_malformed_line_exits_2(bm25_index, home, tmp_path):
    """It rejects a malformed queries line with exit 2 and names the line."""
    queries = tmp_path / "bad.jsonl"
    queries.write_text('{"_id": "q1", "text": "ok"}\n{not json\n')
    done = run_cli("search", "--index", bm25_index, "--queries", queries, "--run-out", tmp_path / "run",
                   "--mode", "bm25", "--no-rerank", tmp_home=home)
    assert done.returncode == 2
    assert f"{queries}:2" in one_line_error(done)
    assert not (tmp_path / "run").exists()


def test_cli_usage_errors_exit_2(home, bm25_index):
    """It exits 2 with a one-line message for bad flags, bad env values and missing arguments."""
    assert run_cli("frobnicate", tmp_home=home).returncode == 2
    assert run_cli("search", "--index", bm25_index, tmp_home=home).returncode == 2
    assert run_cli("search", "q", "--index", bm25_index, "--k", "0", tmp_home=home).returncode == 2
    bad_env = run_cli("search", "q", "--index", bm25_index, env_extra={"KNOWLEDGE_MCP_MAX_WORKERS": "many"},
                      tmp_home=home)
    assert bad_env.returncode == 2
    assert "KNOWLEDGE_MCP_MAX_WORKERS" in one_line_error(bad_env)
    assert "Traceback" not in bad_env.stderr


def test_cli_sandbox_limits_are_checked_once_and_name_their_source(home, bm25_index):
    """It refuses a memory limit under 16 MB and a timeout over 120 s with exit 2 naming the variable
    (the sandbox's own checks: one bound per limit)."""
    for variable, value in (("KNOWLEDGE_MCP_MEMORY_MB", "8"), ("KNOWLEDGE_MCP_TIMEOUT_S", "121")):
        done = run_cli("search", "q", "--index", bm25_index, env_extra={variable: value}, tmp_home=home)
        assert done.returncode == 2, (variable, done.stderr)
        assert variable in one_line_error(done) and value in one_line_error(done)


def test_cli_config_toml_is_read_and_validated(home, tmp_path):
    """It reads config.toml from the state dir and names the file and key of a bad value."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text("max_workers = 'lots'\n")
    done = run_cli("search", "q", "--index", tmp_path / "none", env_extra={"KNOWLEDGE_MCP_STATE_DIR": str(state)},
                   tmp_home=home)
    assert done.returncode == 2
    message = one_line_error(done)
    assert "config.toml" in message and "max_workers" in message


def test_cli_index_build_missing_source_exits_2(home, tmp_path):
    """It exits 2 for a source path that does not exist and leaves no index."""
    out = tmp_path / "idx"
    done = run_cli("index", "build", tmp_path / "nope", "--out", out, "--no-vectors", tmp_home=home)
    assert done.returncode == 2, done.stderr
    assert "nope" in one_line_error(done)
    assert_no_index(out)


def test_cli_index_build_empty_corpus_exits_2(home, tmp_path):
    """It exits 2 for a source with nothing to index and leaves no index."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "idx"
    done = run_cli("index", "build", empty, "--out", out, "--no-vectors", tmp_home=home)
    assert done.returncode == 2, done.stderr
    assert "holds no files" in one_line_error(done)
    assert not out.exists(), f"a failed first build left {sorted(os.listdir(out))}"


@pytest.mark.slow  # several CLI runs (builds, servers): seconds even idle
def test_cli_index_build_all_gitignored_names_the_cause_and_no_gitignore_indexes_it(home, tmp_path):
    """It says the files are gitignored and how to index them; --no-gitignore then indexes them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / ".gitignore").write_text("*\n")
    (src / "notes.md").write_text("# zebracorn notes\n")
    out = tmp_path / "idx"
    done = run_cli("index", "build", src, "--out", out, "--no-vectors", tmp_home=home)
    assert done.returncode == 2, done.stderr
    assert "--no-gitignore" in one_line_error(done)
    assert not out.exists()
    done = run_cli("index", "build", src, "--out", out, "--no-vectors", "--no-gitignore", tmp_home=home)
    assert done.returncode == 0, done.stderr
    found = run_cli("search", "zebracorn", "--index", out, "--mode", "bm25", "--no-rerank", "--json", tmp_home=home)
    assert found.returncode == 0, found.stderr
    assert [h["path"] for h in json.loads(found.stdout)] == ["notes.md"]


def test_cli_index_build_malformed_jsonl_exits_2(home, tmp_path):
    """It exits 2 naming the malformed line of a .jsonl corpus and leaves no index."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "d1", "title": "One", "text": "first document"}\n{"id": "d2", "title": \n')
    out = tmp_path / "idx"
    done = run_cli("index", "build", corpus, "--out", out, "--no-vectors", tmp_home=home)
    assert done.returncode == 2, done.stderr
    assert f"{corpus}:2" in one_line_error(done)
    assert_no_index(out)


def _manifest_path(index_dir: Path) -> Path:
    version = (index_dir / "CURRENT").read_text().strip()
    return index_dir / "versions" / version / "manifest.json"


def test_cli_other_format_version_exits_3(bm25_index, home, tmp_path):
    """It exits 3 for an index written in another format version."""
    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    manifest_path = _manifest_path(copy)
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    done = run_cli("search", "token", "--index", copy, "--mode", "bm25", "--no-rerank", tmp_home=home)
    assert done.returncode == 3, done.stderr
    assert "999" in one_line_error(done)


def test_cli_checksum_mismatch_exits_3(bm25_index, home, tmp_path):
    """It exits 3 when an artefact no longer matches the checksum in the manifest."""
    copy = tmp_path / "idx"
    shutil.copytree(bm25_index, copy)
    docs = _manifest_path(copy).parent / "docs.json"
    docs.write_text(docs.read_text().replace("src/", "srx/"))
    done = run_cli("index", "info", copy, "--verify", tmp_home=home)
    assert done.returncode == 3, done.stderr
    assert "docs.json" in one_line_error(done)
    assert run_cli("index", "info", bm25_index, "--verify", tmp_home=home).returncode == 0


@pytest.mark.slow  # several CLI runs (builds, servers): seconds even idle
def test_cli_serve_missing_or_broken_index_exits_3_before_the_handshake(bm25_index, home, tmp_path):
    """It exits 3 at once, with the index message on stderr and nothing on the MCP wire, for a missing
    index and for one whose manifest is damaged (a client then shows the server as failed)."""
    broken = tmp_path / "broken"
    shutil.copytree(bm25_index, broken)
    current = (broken / "CURRENT").read_text().strip()
    (broken / "versions" / current / "manifest.json").write_text("{not json")
    for index_dir in (tmp_path / "none", broken):
        done = run_cli("serve", "--index", index_dir, stdin="", tmp_home=home, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stdout == ""
        assert str(index_dir.name) in one_line_error(done)


def test_cli_missing_index_exits_3(home, tmp_path):
    """It exits 3 for an index directory that does not exist."""
    done = run_cli("search", "token", "--index", tmp_path / "none", "--mode", "bm25", "--no-rerank", tmp_home=home)
    assert done.returncode == 3, done.stderr
    assert "none" in one_line_error(done)


@pytest.mark.model
def test_cli_missing_embed_model_exits_4(corpus, home, tmp_path):
    """It exits 4 naming the missing embedding model, and leaves no index."""
    out = tmp_path / "idx"
    done = run_cli("index", "build", corpus, "--out", out, "--embed-model", tmp_path / "no-such-model", tmp_home=home)
    assert done.returncode == 4, done.stderr
    assert "no-such-model" in one_line_error(done)
    assert_no_index(out)


@pytest.mark.model
def test_cli_missing_rerank_model_exits_4(bm25_index, home, tmp_path):
    """It exits 4 when the configured reranker is missing, with the install hint."""
    done = run_cli("search", "token", "--index", bm25_index, "--mode", "bm25",
                   env_extra={"KNOWLEDGE_MCP_RERANK_MODEL": str(tmp_path / "no-reranker")}, tmp_home=home)
    assert done.returncode == 4, done.stderr


@pytest.mark.linux_only
@pytest.mark.model
def test_cli_exec_runs_a_program(bm25_index, home):
    """It runs one program against the index and prints the processed result (text, or JSON)."""
    code = "hits = bm25('token bucket', k=2)\nprint(hits[0].path)\nresult = len(files())"
    done = run_cli("exec", "--index", bm25_index, code, tmp_home=home)
    assert done.returncode == 0, done.stderr
    assert "src/ratelimit.py" in done.stdout and "result = 6" in done.stdout
    as_json = run_cli("exec", "--index", bm25_index, "-", "--json", stdin="print(6 * 7)", tmp_home=home)
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply["outcome"] == "ok" and reply["stdout"] == "42\n" and reply["output_tokens"] > 0


@pytest.mark.linux_only
@pytest.mark.model
def test_cli_exec_text_names_cli_flags_not_mcp_arguments(bm25_index, home):
    """It tells a CLI user about --timeout-s and --json, never timeout_s or structuredContent."""
    timed_out = run_cli("exec", "--index", bm25_index, "--timeout-s", "1", "while True:\n    pass", tmp_home=home)
    assert timed_out.returncode == 2, timed_out.stderr
    assert "--timeout-s" in timed_out.stdout and "timeout_s" not in timed_out.stdout
    long_value = run_cli("exec", "--index", bm25_index, "result = 'x' * 2000", tmp_home=home)
    assert long_value.returncode == 0, long_value.stderr
    assert "--json" in long_value.stdout and "structuredContent" not in long_value.stdout


@pytest.mark.linux_only
@pytest.mark.model
def test_cli_exec_logs_no_third_party_noise_at_the_default_level(bm25_index, home):
    """It keeps faiss's loader messages (which CPU build it tried) out of the INFO log."""
    done = run_cli("exec", "--index", bm25_index, "print(1)", env_extra={"KNOWLEDGE_MCP_LOG_LEVEL": "INFO"},
                   tmp_home=home)
    assert done.returncode == 0, done.stderr
    assert "faiss" not in done.stderr.lower() and "AVX" not in done.stderr, done.stderr


@pytest.mark.linux_only
@pytest.mark.model
@pytest.mark.slow
def test_cli_exec_root_first_build_logs_what_it_does_not_what_is_missing(tmp_path):
    """It builds a root's first index without logging "no index at ... build one", third-party warnings
    or progress bars, and says the seconds it reports are elapsed."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("def hello():\n    return 1\n")
    done = run_cli("exec", "--root", tmp_path / "src", "print(1)", env_extra={"KNOWLEDGE_MCP_LOG_LEVEL": "INFO"},
                   tmp_home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    for noise in ("no index at", "build one with", "pre-processing", "Loading weights", "AVX"):
        assert noise not in done.stderr, (noise, done.stderr)
    assert "s elapsed)" in done.stderr


@pytest.mark.linux_only
@pytest.mark.model
def test_cli_exec_refused_program_exits_2(bm25_index, home):
    """It exits 2 for a program the policy refuses, printing the validation error."""
    done = run_cli("exec", "--index", bm25_index, "import os\nos.system('true')", tmp_home=home)
    assert done.returncode == 2
    assert "validation_error" in done.stdout
    empty = run_cli("exec", "--index", bm25_index, "   ", tmp_home=home)
    assert empty.returncode == 2 and "empty" in one_line_error(empty)


@pytest.mark.slow  # starts the whole exec runtime to see the refusal
def test_cli_serve_refuses_filesystem_root(home):
    """It refuses to index / without --force and says how to choose."""
    done = run_cli("exec", "--root", "/", "print(1)", tmp_home=home)
    assert done.returncode == 2
    message = one_line_error(done)
    assert "--root" in message and "--force" in message


@pytest.mark.slow  # starts the whole exec runtime to see the refusal
def test_cli_serve_refuses_home_directory(home):
    """It refuses to index the home directory itself without --force."""
    done = run_cli("exec", "--root", home, "print(1)", tmp_home=home)
    assert done.returncode == 2
    assert "home directory" in one_line_error(done)


@pytest.mark.model
def test_cli_embed_precision_fp32_builds_a_searchable_index_and_caches_its_encoder(corpus, home, tmp_path):
    """It builds with the fp32 encoder when asked (recorded in the manifest, exported once into the
    cache dir), serves semantic search from it, and refuses an unknown precision with exit 2."""
    out = tmp_path / "idx"
    done = run_cli("index", "build", corpus, "--out", out, "--embed-precision", "fp32", tmp_home=home)
    assert done.returncode == 0, done.stderr
    info = json.loads(run_cli("index", "info", out, "--json", tmp_home=home).stdout)
    assert info["models"]["embed"]["encoder"]["precision"] == "fp32", info
    assert "fp32 ONNX encoder" in run_cli("index", "info", out, tmp_home=home).stdout
    assert list((home / "cache" / "models" / "encoders").glob("*-fp32-*/model.onnx"))
    searched = run_cli("search", "token budget", "--index", out, "--mode", "semantic", "--no-rerank", "--json",
                       tmp_home=home)
    assert searched.returncode == 0 and json.loads(searched.stdout), searched.stderr
    bad = run_cli("index", "build", corpus, "--out", tmp_path / "bad", "--embed-precision", "int4", tmp_home=home)
    assert bad.returncode == 2 and "int4" in bad.stderr
    assert_no_index(tmp_path / "bad")
