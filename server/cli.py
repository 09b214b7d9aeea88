"""The `knowledge-mcp` command line: index build|info, search, serve, exec.

Contract: this is the only module that reads argv, the environment and (through `load_config`)
config.toml. Exit codes: 0 ok, 1 internal error, 2 usage or bad input, 3 index missing,
incompatible or corrupt, 4 model missing. Every failure prints one line on stderr saying what was
wrong, where, and what to do; tracebacks only at log level DEBUG. stdout carries results only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from index import EMBED_PRECISIONS
from sandbox import MAX_TIMEOUT_S
from search import SEARCH_MODES

from .config import ENV_PREFIX, LOG_LEVELS, ServerConfig, load_config
from .errors import EXIT_INTERNAL, EXIT_OK, UsageError, exit_code_for

__all__ = ["build_parser", "main"]

PROG = "knowledge-mcp"
MAX_K = 1000

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- argument parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _k(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_K:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_K}, got {value}")
    return value


def _timeout_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds as a number, got {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {text}")
    return value


def _output_tokens(text: str) -> int:
    value = _positive_int(text)
    if not 100 <= value <= 20000:
        raise argparse.ArgumentTypeError(f"must be in [100, 20000], got {value}")
    return value


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, metavar="DIR", help="index directory (from `index build`)")
    parser.add_argument("--k", type=_k, default=10, help="hits per query (default 10)")
    parser.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="retrieval mode (default hybrid)")
    parser.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder rerank")
    parser.add_argument("--path", metavar="GLOB", help="only paths matching this glob, e.g. 'src/**/*.py'")
    parser.add_argument("--language", metavar="L", help="only this language, e.g. python")
    parser.add_argument("--json", action="store_true", help="print hits as JSON")


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--index", metavar="[NAME=]DIR", action="append",
                        help="serve this index directory; repeat as NAME=DIR to serve several (a plain DIR is 'default')")
    target.add_argument("--root", metavar="DIR", help="index this source tree (cached) and serve it")
    parser.add_argument("--state-dir", metavar="D", help="skills, config.toml, audit log")
    parser.add_argument("--force", action="store_true", help="allow /, the home directory or a huge tree as root")
    parser.add_argument("--no-gitignore", action="store_true", help="with --root: index files that .gitignore lists too")
    parser.add_argument("--no-vectors", action="store_true",
                        help="with --root: BM25 only (no embedding in the background)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand (exit code 2 on a usage error)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sandboxed code-execution knowledge server: index a codebase, search it, serve it over MCP.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser("index", help="build or inspect an index")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    build = index_commands.add_parser("build", help="build or incrementally update an index")
    build.add_argument("sources", nargs="+", metavar="SOURCE", help="directory, file or .jsonl corpus")
    build.add_argument("--out", required=True, metavar="DIR", help="index directory to create or update")
    build.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths matching GLOB (repeatable)")
    build.add_argument("--no-gitignore", action="store_true",
                       help="index files that .gitignore lists too (a source named explicitly is indexed anyway)")
    build.add_argument("--embed-model", metavar="P", help="embedding model folder or package")
    build.add_argument("--embed-precision", choices=EMBED_PRECISIONS, default="int8",
                       help="weights of the ONNX encoder: int8 (default, ~2.3x faster) or fp32")
    build.add_argument("--no-vectors", action="store_true", help="BM25 only: skip embeddings")
    build.add_argument("--vectors", choices=("now", "later"), default="now",
                       help="now (default): embed during the build; later: write the keyword index (BM25, symbols, "
                            "texts) at once, servable with vector coverage 0, and fill the vectors with `index embed DIR`")
    build.add_argument("--force", action="store_true", help="rebuild from scratch")
    build.add_argument("--backend", choices=("inprocess", "qdrant"),
                       help="where queries run: inprocess (default) or a Qdrant copy (DIR keeps the local sidecar); "
                            "an index already in Qdrant stays there unless --backend inprocess")
    build.add_argument("--qdrant-url", metavar="URL", help="Qdrant server (http or https; key from KNOWLEDGE_MCP_QDRANT_API_KEY)")
    build.add_argument("--qdrant-path", metavar="P", help="Qdrant local mode: storage folder (one process at a time)")
    build.add_argument("--qdrant-edge", action="store_true",
                       help="with --qdrant-path: the embedded Qdrant engine (qdrant-edge-py), one shard folder per version")
    build.add_argument("--collection", metavar="NAME", help="Qdrant collection (alias) name (default: DIR's name)")
    build.add_argument("--qdrant-shards", type=_positive_int, default=1, metavar="N",
                       help="shards of a new collection (a cluster; docs/SCALE.md)")
    build.add_argument("--qdrant-replicas", type=_positive_int, default=1, metavar="N",
                       help="copies of each shard (2 survives a node failure)")
    embed = index_commands.add_parser(
        "embed", help="embed the chunks of an index that have no vector yet (after `index build --vectors later`)",
        description="Fill the vectors an index lacks. Resumable: a run that is killed keeps every finished "
                    "checkpoint, and the next run continues from there. The index switches to the version with "
                    "vectors in one step when all are done; it stays servable (BM25) meanwhile.",
    )
    embed.add_argument("dir", metavar="DIR", help="index directory (from `index build ... --vectors later`)")
    embed.add_argument("--embed-model", metavar="P",
                       help="embedding model folder or package (default: the one the build recorded)")
    embed.add_argument("--embed-precision", choices=EMBED_PRECISIONS,
                       help="weights of the ONNX encoder (default: the one the build recorded, else int8)")
    embed.add_argument("--checkpoint-chunks", type=_positive_int, default=256, metavar="N",
                       help="write the vectors durably every N chunks (default 256): what a kill can lose")
    embed.add_argument("--json", action="store_true", help="print the report as JSON")
    info = index_commands.add_parser("info", help="summarise an index's manifest")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.add_argument("--verify", action="store_true", help="also check every artefact's sha256 (reads the whole index)")
    status = index_commands.add_parser(
        "status", help="how complete and fresh an index is: vector coverage, pending changes, version"
    )
    status.add_argument("dir", metavar="DIR")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    search = commands.add_parser(
        "search",
        help="search an index (one QUERY, or a batch with --queries/--run-out)",
        description="Print the hits of QUERY, or with --queries Q.jsonl write a TREC run file to --run-out.",
    )
    search.add_argument("query", nargs="?", metavar="QUERY")
    _add_search_options(search)
    search.add_argument("--queries", metavar="Q.jsonl", help='batch: one {"_id", "text"} object per line')
    search.add_argument("--run-out", metavar="RUN", help="batch: TREC run file to write")

    serve = commands.add_parser("serve", help="run the MCP stdio server")
    _add_target_options(serve)
    serve.add_argument("--max-workers", type=_positive_int, metavar="N", help="children running at once")

    run = commands.add_parser("exec", help="run one program and print the processed result")
    _add_target_options(run)
    run.add_argument("code", metavar="CODE", help="Python program, or - to read it from stdin")
    run.add_argument("--timeout-s", type=_timeout_s, metavar="S", help="wall-clock limit (default 30)")
    run.add_argument("--max-output-tokens", type=_output_tokens, default=2000, metavar="N", help="reply budget (default 2000)")
    run.add_argument("--json", action="store_true", help="print the structured result as JSON")
    return parser


# ---------------------------------------------------------------- commands


def _cmd_index_build(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    from index import build_index

    location = _qdrant_location(args, config)
    if location is not None:  # fail before a long build when Qdrant is unreachable (exit 3)
        from index import connect_qdrant

        client = connect_qdrant(location, config.qdrant_api_key)
        if client is not None:
            client.close()
    index_config = config.index
    if args.vectors == "later":
        if args.no_vectors:
            raise UsageError("--vectors later and --no-vectors contradict each other; pass one of them")
        if location is not None:
            raise UsageError("--vectors later is for in-process indexes; a Qdrant copy needs its vectors now")
        index_config = dataclasses.replace(index_config, vectors_later=True)
    report = build_index([Path(s) for s in args.sources], Path(args.out), index_config)
    summary = _as_dict(report)
    if location is not None:
        from index import open_index, push_to_qdrant

        summary["qdrant_collection"] = push_to_qdrant(
            open_index(Path(args.out)), location, config.qdrant_api_key, config.search.k1, config.search.b
        )
    elif args.backend == "inprocess":
        (Path(args.out) / "backend.json").unlink(missing_ok=True)
    out.write(_format_build_report(summary, Path(args.out)) + "\n")
    return EXIT_OK


def _cmd_index_embed(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    from index import embed_index, read_backend, read_manifest

    directory = Path(args.dir)
    # The precision `index build --vectors later` recorded, unless the flag says otherwise.
    recorded = (read_manifest(directory).get("vectors_later") or {}).get("precision")
    index_config = dataclasses.replace(config.index, embed_checkpoint_chunks=args.checkpoint_chunks,
                                       embed_precision=args.embed_precision or recorded or "int8")
    report = embed_index(directory, index_config)
    if report.chunks_missing and read_backend(directory) is not None:
        logger.warning("the Qdrant copy of %s is not updated by index embed; run index build --backend qdrant", directory)
    if args.json:
        out.write(json.dumps({**dataclasses.asdict(report), "out": str(report.out)}, sort_keys=True) + "\n")
    else:
        out.write(report.summary() + "\n")
    return EXIT_OK


def _qdrant_location(args: argparse.Namespace, config: ServerConfig) -> Any:
    """Where `index build` writes the Qdrant copy (None: in-process only); checked before building."""
    from index import QdrantLocation, read_backend

    out = Path(args.out)
    recorded = read_backend(out) if (out / "backend.json").exists() else None
    backend = args.backend or ("qdrant" if recorded else "inprocess")
    given = [flag for flag in ("qdrant_url", "qdrant_path", "qdrant_edge", "collection") if getattr(args, flag)]
    if backend == "inprocess":
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --backend qdrant")
        return None
    if args.qdrant_url and args.qdrant_path:
        raise UsageError("give one of --qdrant-url URL and --qdrant-path P, not both")
    if args.qdrant_edge and not args.qdrant_path:
        raise UsageError("--qdrant-edge needs --qdrant-path P (the folder of the embedded engine's shards)")
    url = args.qdrant_url or (None if args.qdrant_path else (recorded or {}).get("url") or config.qdrant_url)
    path = args.qdrant_path or (None if url else (recorded or {}).get("path"))
    if url is None and path is None:
        raise UsageError(
            "--backend qdrant needs --qdrant-url URL (or KNOWLEDGE_MCP_QDRANT_URL) or --qdrant-path P (local mode)"
        )
    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"--qdrant-url must start with http:// or https://, got {url!r}")
    collection = args.collection or (recorded or {}).get("collection") or out.resolve().name
    try:
        return QdrantLocation(collection=collection, url=url,
                              path=str(Path(path).expanduser().resolve()) if path else None,
                              shards=args.qdrant_shards, replicas=args.qdrant_replicas,
                              edge=bool(args.qdrant_edge or (recorded or {}).get("engine") == "edge") and path is not None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _format_build_report(summary: Mapping[str, Any], out_dir: Path) -> str:
    parts = [f"{key}={value}" for key, value in summary.items() if isinstance(value, (int, float, str)) and key != "out"]
    return f"index built: {out_dir}" + (f" ({', '.join(parts)})" if parts else "")


def _cmd_index_info(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    from index import open_index, read_manifest

    from .freshness import backend_summary, summarize_manifest

    if args.verify:
        open_index(Path(args.dir), verify=True)  # IndexCorruptError (exit 3) names the first bad artefact
    manifest = read_manifest(Path(args.dir))
    summary = {**summarize_manifest(manifest), "backend": backend_summary(Path(args.dir))}
    if args.json:
        out.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    else:
        out.write(format_manifest_summary(summary) + "\n")
    return EXIT_OK


def _cmd_index_status(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    from index import index_status

    status = {**index_status(Path(args.dir)), "watcher": "none"}  # nothing watches the tree from the CLI
    if args.json:
        out.write(json.dumps({"indexes": [status]}, indent=2, sort_keys=True) + "\n")
    else:
        out.write("\n".join(f"{key + ':':17s}{_status_text(key, value)}" for key, value in status.items()) + "\n")
    return EXIT_OK


def _status_text(key: str, value: Any) -> str:
    if key == "vector_coverage":
        return f"{value:.1%}"
    if key == "pending_changes" and value is None:
        return "unknown (the source root is not here)"
    return str(value)


def format_manifest_summary(summary: Mapping[str, Any]) -> str:
    models = summary.get("models") or {}
    model_text = ", ".join(
        _model_text(role, info) for role, info in models.items() if info
    ) or "none (BM25 only)"
    sources = summary.get("sources") or []
    lines = [
        f"format version: {summary.get('format_version')}",
        f"built at:       {summary.get('built_at')}",
        f"root:           {summary.get('root')}",
        f"sources:        {', '.join(map(str, sources)) if isinstance(sources, list) else sources}",
        f"files:          {summary.get('files')}",
        f"chunks:         {summary.get('chunks')}",
        f"models:         {model_text}",
        f"backend:        {_backend_text(summary.get('backend') or {})}",
    ]
    return "\n".join(lines)


def _backend_text(backend: Mapping[str, Any]) -> str:
    if backend.get("name") != "qdrant":
        return "inprocess"
    return f"qdrant, collection {backend.get('collection')} at {backend.get('url') or backend.get('path')}"


def _model_text(role: str, info: Any) -> str:
    if not isinstance(info, Mapping):
        return f"{role}: {info}"
    encoder = info.get("encoder")
    cosine = encoder.get("min_cosine_to_fp32") if isinstance(encoder, Mapping) else None
    carried = (
        f"; {encoder.get('precision', '?')} ONNX encoder"
        + (f", cosine >= {cosine:.3f} to PyTorch" if isinstance(cosine, (int, float)) else "")
        if isinstance(encoder, Mapping) else ""
    )
    return f"{role}: {info.get('id', '?')} (dim {info.get('dim', '?')}{carried})"


def _cmd_search(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    from search import Searcher

    batch = args.queries is not None or args.run_out is not None
    if batch and (args.queries is None or args.run_out is None):
        raise UsageError("batch search needs both --queries Q.jsonl and --run-out RUN")
    if batch and args.query is not None:
        raise UsageError("pass either QUERY or --queries Q.jsonl, not both")
    if not batch and (args.query is None or not args.query.strip()):
        raise UsageError("missing QUERY: give a query string, or --queries Q.jsonl --run-out RUN for a batch")
    queries = read_queries(Path(args.queries)) if batch else []

    rerank = not args.no_rerank
    needs_models = rerank or args.mode != "bm25"
    searcher = Searcher.open(Path(args.index), config.search, load_models=needs_models,
                             qdrant_api_key=config.qdrant_api_key)
    options = dict(k=args.k, mode=args.mode, rerank=rerank, path=args.path, language=args.language)
    if batch:
        return _run_batch(searcher, queries, Path(args.run_out), options, out)
    hits = searcher.search(args.query, **options)
    if args.json:
        out.write(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False) + "\n")
    else:
        out.write(format_hits(hits) + "\n")
    return EXIT_OK


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(qid, text) pairs of a BEIR-style queries file; a bad line is a `UsageError` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: queries file not found; pass an existing .jsonl file to --queries") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the queries file ({exc.strerror})") from exc
    queries: list[tuple[str, str]] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}:{number}: malformed JSON line ({exc}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise UsageError(f'{path}:{number}: expected a JSON object like {{"_id": "q1", "text": "..."}}')
        qid = record.get("_id", record.get("id"))
        text = record.get("text", record.get("query"))
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or not isinstance(text, str) or not text.strip():
            raise UsageError(f'{path}:{number}: each line needs "_id" (or "id") and a non-empty "text" (or "query")')
        queries.append((str(qid), text))
    if not queries:
        raise UsageError(f"{path}: no queries found; the file is empty")
    return queries


def _run_batch(searcher: Any, queries: list[tuple[str, str]], run_out: Path, options: dict[str, Any], out: TextIO) -> int:
    from search import search_batch

    lines = search_batch(searcher, queries, **options)
    run_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_out.with_name(f".{run_out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        os.replace(tmp, run_out)
    finally:
        tmp.unlink(missing_ok=True)
    out.write(f"wrote {len(lines)} lines for {len(queries)} queries to {run_out}\n")
    return EXIT_OK


def format_hits(hits: Sequence[Any]) -> str:
    """Human rendering: `rank. path:start-end  score  title` then the first snippet lines."""
    if not hits:
        return "no hits"
    blocks = []
    for rank, hit in enumerate(hits, start=1):
        head = f"{rank:>2}. {hit.path}:{hit.start_line}-{hit.end_line}  [{hit.language}]  {hit.score:.3f}"
        if hit.title:
            head += f"  {hit.title}"
        snippet = "\n".join("      " + line for line in hit.text.strip().splitlines()[:3])
        blocks.append(head + ("\n" + snippet if snippet else ""))
    return "\n".join(blocks)


def _cmd_serve(args: argparse.Namespace, config: ServerConfig, out: TextIO) -> int:
    if config.index_dir is not None:
        # A missing or broken index fails here, with exit 3 and the message saying what to do, before
        # the MCP handshake: a client then shows the server as failed instead of "connected".
        from index import open_index, read_backend

        served = config.indexes or (("default", config.index_dir),)
        for _name, index_dir in served:
            open_index(Path(index_dir))
        if any(read_backend(Path(index_dir)) is not None for _name, index_dir in served):
            # A Qdrant-backed index: unreachable, a refused key or a missing collection is exit 3 naming
            # the URL and what to check, before the handshake too.
            from .broker import QueryBroker

            broker = QueryBroker(served, config.search, config.qdrant_api_key, config.sandbox.max_backend_queries)
            try:
                broker.open()
            finally:
                broker.close()  # local mode: one process may hold the storage; the server opens it again
    from .handshake import answer_first_line, claimed_stdin

    # The SDK and the server's modules load in a thread while the client's first line is awaited and
    # a first `initialize` answered (handshake.py): the reply does not wait for a second of imports.
    loader = threading.Thread(target=importlib.import_module, args=(f"{__package__}.app",), daemon=True)
    loader.start()
    with claimed_stdin() as source:
        first = answer_first_line(source)
        loader.join()
        from .app import run_stdio_server

        run_stdio_server(config, source, first)
    return EXIT_OK


def _cmd_exec(args: argparse.Namespace, config: ServerConfig, out: TextIO, stdin: Any) -> int:
    from .app import execute_once

    if args.code == "-":
        raw = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
        if isinstance(raw, bytes):
            try:
                code = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"stdin: the program is not valid UTF-8 (byte {exc.start}); save it as UTF-8") from None
        else:
            code = raw
    else:
        code = args.code
    if not code.strip():
        raise UsageError("the program is empty; pass Python code as CODE or on stdin with -")
    reply = execute_once(config, code, timeout_s=args.timeout_s or config.sandbox.timeout_s, max_output_tokens=args.max_output_tokens)
    if args.json:
        out.write(json.dumps(reply.structured, ensure_ascii=False) + "\n")
    else:
        out.write(_in_cli_words(reply.text) + "\n")
    outcome = reply.structured.get("outcome")
    return EXIT_OK if outcome == "ok" else (EXIT_INTERNAL if outcome == "internal_error" else 2)


# The reply's text speaks to MCP clients (argument names, structuredContent); on the command line the
# same advice names the flag that does it.
_CLI_WORDS = (
    ("structuredContent.result", "the --json output's result"),
    ("structuredContent", "the --json output"),
    ("max_output_tokens", "--max-output-tokens"),
    ("timeout_s", "--timeout-s"),
)


def _in_cli_words(text: str) -> str:
    for mcp_words, cli_words in _CLI_WORDS:
        text = text.replace(mcp_words, cli_words)
    return text


# ---------------------------------------------------------------- entry point


# Third-party loggers that talk at INFO about their own internals (faiss: "Could not load library with
# AVX512 support"); users see them only at DEBUG.
# httpx logs every Qdrant request of the query broker at INFO (one line per query).
NOISY_LOGGERS = ("faiss", "faiss.loader", "httpx", "httpcore")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


def _as_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return {}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    env = dict(os.environ if env is None else env)
    level = (env.get(ENV_PREFIX + "LOG_LEVEL") or "INFO").strip().upper()
    level = level if level in LOG_LEVELS else "INFO"
    _configure_logging(level)
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # argparse already printed usage and the problem
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        interactive = sys.stderr.isatty()
        config = load_config(args, env, show_progress=interactive)
        if config.log_level != level:
            level = config.log_level
            _configure_logging(level)
        if args.command == "index":
            handler = {"build": _cmd_index_build, "status": _cmd_index_status,
                       "embed": _cmd_index_embed}.get(args.index_command, _cmd_index_info)
            return handler(args, config, sys.stdout)
        if args.command == "search":
            return _cmd_search(args, config, sys.stdout)
        if args.command == "serve":
            return _cmd_serve(args, config, sys.stdout)
        return _cmd_exec(args, config, sys.stdout, sys.stdin)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place every error becomes an exit code
        code = exit_code_for(exc)
        message = " ".join(str(exc).split()) or type(exc).__name__
        if code == EXIT_INTERNAL:
            message = (
                f"internal error: {type(exc).__name__}: {message} "
                f"(rerun with {ENV_PREFIX}LOG_LEVEL=DEBUG for the traceback and report it)"
            )
        print(f"{PROG}: error: {message}", file=sys.stderr)
        logger.debug("traceback of the error above", exc_info=True)
        return code
    finally:
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
