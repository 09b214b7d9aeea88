"""The token benchmark's answer program on both question sets, in process: how often its first citation,
and any of its three, covers the answer's definition line.

    .venv/bin/python benchmarks/answer_eval.py [--index DIR] [-v]

The program (`bench_server_e2e.ANSWER_PROGRAM`) runs with plain `exec` against a `Searcher` of this
repository's code, with the sandbox API's names bound to the engine's methods: the same ranking it gets
inside the sandbox, in seconds instead of a server run. The token questions use their three phrasings
(question, query, paraphrase); the code set (`code_queries.jsonl`) its one text. The token figures that
count are those of `bench_server_e2e.py -k token`, which runs the program in the real sandbox over stdio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

from anchors import files_under, read_jsonl, resolve_records
from bench_server_e2e import (
    ANSWER_CITATIONS,
    ANSWER_PROGRAM,
    PHRASING_FIELDS,
    QUESTIONS,
    REPO_SOURCES,
    _citations,
)

ROOT = Path(__file__).resolve().parents[1]
CODE_QUERIES = ROOT / "benchmarks" / "code_queries.jsonl"
DEFAULT_INDEX = ROOT / "benchmarks" / ".cache" / "answer-index"


def build_index(out: Path) -> None:
    """This repository's code indexed as the token bench does (incremental when `out` exists)."""
    command = [sys.executable, "-m", "server", "index", "build", *(str(ROOT / s) for s in REPO_SOURCES), "--out", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run_program(searcher: object, phrasings: list[str]) -> str:
    """The program's stdout for one question."""
    code = ANSWER_PROGRAM.format(question=phrasings[0], queries=tuple(phrasings[1:]))
    names = {name: getattr(searcher, name) for name in ("bm25", "semantic", "search", "rerank", "read", "files")}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, names)  # noqa: S102 -- our own benchmark program, not agent code
    return out.getvalue()


def evaluate(searcher: object, records: list[dict], fields: tuple[str, ...], origin: str, verbose: bool) -> dict:
    spans = resolve_records(records, files_under(ROOT), origin)
    first = any_of = 0
    for record in records:
        line = spans[record["id"]].def_line
        cited = _citations(run_program(searcher, [record[f] for f in fields]))[:ANSWER_CITATIONS]
        right = [path == record["path"] and start <= line <= end for path, start, end in cited]
        first += bool(right and right[0])
        any_of += any(right)
        if verbose and not (right and right[0]):
            got = " | ".join(f"{path}:{start}" for path, start, _ in cited)
            print(f"miss {record['id']}: wants {record['path']}:{line} ({record['symbol']}); cited {got}", file=sys.stderr)
    return {"questions": len(records), "first": first, f"any_of_{ANSWER_CITATIONS}": any_of}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help=f"an index of this repository (default: build {DEFAULT_INDEX})")
    parser.add_argument("-v", "--verbose", action="store_true", help="name every question whose first citation is wrong")
    args = parser.parse_args()
    index_dir = args.index
    if index_dir is None:
        index_dir = DEFAULT_INDEX
        build_index(index_dir)
    from search import Searcher

    searcher = Searcher.open(index_dir)
    metrics = {
        "token_questions": evaluate(searcher, read_jsonl(QUESTIONS), PHRASING_FIELDS, QUESTIONS.name, args.verbose),
        "code_queries": evaluate(searcher, read_jsonl(CODE_QUERIES), ("text",), CODE_QUERIES.name, args.verbose),
    }
    print(json.dumps({"bench": "answer_program", "metrics": metrics}))


if __name__ == "__main__":
    main()
