"""Multi-language code questions over pinned open-source projects: S@1, S@5, MRR@10 per language and mode,
and definitions() by qualified name over every symbol of those projects.

    .venv/bin/python benchmarks/polyglot_sources.py --enable-deb-src   # once: fetch the pinned sources
    .venv/bin/python benchmarks/polyglot_eval.py [--no-vectors] [--skip-definitions]

The projects (benchmarks/polyglot_sources.py, PINNED) are indexed together, each under its own folder.
Each question of benchmarks/polyglot_queries.jsonl names its answer by ``symbol`` and the text of the
definition's first line (``definition``), resolved at run time in the indexed text of ``path``: the line
must occur exactly once in the file (else the run stops naming the question; a stale anchor never
scores a silent 0). A hit answers a question when it is in that file and its lines contain that line.
Modes: bm25, semantic, hybrid (rerank=False) and default (search() as shipped: hybrid, rerank=True).
Goals on this set: default S@5 >= 0.90 and S@1 >= 0.70. definitions(qualified name) must give the
symbol's own chunk first for >= 98% of all symbols of the pinned projects (the index's symbol table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import common
import polyglot_sources

from index import open_index  # noqa: E402  (common puts the repository on sys.path)
from search import SearchConfig, Searcher  # noqa: E402

# question set: (questions, staged tree, cached index name); "heldout" is never used to tune anything.
SETS = {
    "polyglot": (common.REPO / "benchmarks" / "polyglot_queries.jsonl", common.CACHE / "polyglot-tree", "polyglot-index"),
    "heldout": (common.REPO / "benchmarks" / "heldout_queries.jsonl", common.CACHE / "heldout-tree", "heldout-index"),
}
MODES = {"bm25": ("bm25", False), "semantic": ("semantic", False), "hybrid": ("hybrid", False),
         "default": ("hybrid", True)}
K = 10


def stage_tree(set_name: str = "polyglot") -> Path:
    """Hard-link the indexed files of every project of the set under its tree/<project>/ (fetching if needed)."""
    tree = SETS[set_name][1]
    for name in polyglot_sources.SETS[set_name]:
        polyglot_sources.fetch(name)
        root = polyglot_sources.project_dir(name)
        for source in polyglot_sources.project_files(name):
            target = tree / name / source.relative_to(root)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
    return tree


def resolve(records: list[dict], data) -> dict[str, tuple[str, int]]:
    """{qid: (indexed path, 1-based definition line)}; SystemExit listing every question that fails."""
    found, problems = {}, []
    for record in records:
        path = f"{record['project']}/{record['path']}"
        doc = data.doc_index.get(path)
        if doc is None:
            problems.append(f"{record['id']}: {path} is not indexed")
            continue
        lines = [n for n, line in enumerate(data.doc_text(doc).split("\n"), 1) if record["definition"] in line]
        if len(lines) != 1:
            problems.append(f"{record['id']}: {record['definition']!r} occurs {len(lines)} times in {path}")
            continue
        found[record["id"]] = (path, lines[0])
    if problems:
        raise SystemExit("[polyglot] unresolved answers:\n  " + "\n  ".join(problems))
    return found


def first_correct_rank(hits, answer: tuple[str, int]) -> int | None:
    path, line = answer
    for rank, hit in enumerate(hits, 1):
        if hit.path == path and hit.start_line <= line <= hit.end_line:
            return rank
    return None


def summarise(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "S@1": round(sum(1 for r in ranks if r == 1) / n, 3),
        "S@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 3),
        "MRR@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 3),
        "n": n,
    }


def evaluate_questions(searcher: Searcher, records: list[dict], answers: dict, modes: dict) -> dict:
    report: dict[str, dict] = {}
    misses: dict[str, list[str]] = {}
    for mode_name, (mode, rerank) in modes.items():
        by_language: dict[str, list[int | None]] = defaultdict(list)
        started = time.perf_counter()
        for record in records:
            hits = searcher.search(record["text"], k=K, mode=mode, rerank=rerank)
            rank = first_correct_rank(hits, answers[record["id"]])
            by_language[record["language"]].append(rank)
            if rank != 1:
                misses.setdefault(mode_name, []).append(f"{record['id']}@{rank}")
        every = [r for ranks in by_language.values() for r in ranks]
        report[mode_name] = {"all": summarise(every), **{lang: summarise(r) for lang, r in sorted(by_language.items())}}
        print(f"[polyglot] {mode_name}: {report[mode_name]['all']} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr)
    report["not_first"] = misses
    return report


def evaluate_definitions(searcher: Searcher) -> dict:
    """definitions(qualified name) for every symbol of the index (every definition the chunker found).

    named_first: the first hit is a definition with exactly that qualified name (the symbol the name
    names); own_first: it is this very definition (its own chunk), which a name shared by several
    definitions (Java overloads, Rust impl blocks beside their struct, a C prototype and its body)
    can give only one of them; own_first_unique_names: own_first over names held by one definition.
    """
    data = searcher.data
    table = data.symbols
    qualified = table.qualified_names()
    counts: dict[str, int] = defaultdict(int)
    for name in qualified:
        counts[name] += 1
    named: dict[str, list[bool]] = defaultdict(list)
    own: dict[str, list[bool]] = defaultdict(list)
    own_unique: list[bool] = []
    failures = []
    started = time.perf_counter()
    for row, name in enumerate(qualified):
        doc = data.docs[int(table.doc[row])]
        hits = searcher.definitions(name, k=1)
        is_named = bool(hits) and hits[0].symbol == name
        is_own = is_named and hits[0].id == data.chunk_ids[int(table.chunk[row])] \
            and hits[0].path == doc["path"]
        named[doc["language"]].append(is_named)
        own[doc["language"]].append(is_own)
        if counts[name] == 1:
            own_unique.append(is_own)
            if not is_own and len(failures) < 30:
                failures.append(f"{name} ({doc['path']}:{int(table.lines[row][0])}) -> "
                                f"{(hits[0].symbol, hits[0].id) if hits else None}")

    def rate(values: list[bool]) -> float:
        return round(sum(values) / max(len(values), 1), 4)

    every_named = [v for values in named.values() for v in values]
    every_own = [v for values in own.values() for v in values]
    return {
        "symbols": len(every_named),
        "named_first": rate(every_named),
        "own_first": rate(every_own),
        "own_first_unique_names": rate(own_unique),
        "symbols_sharing_their_qualified_name": sum(1 for name in qualified if counts[name] > 1),
        "by_language": {lang: {"symbols": len(named[lang]), "named_first": rate(named[lang]),
                               "own_first": rate(own[lang])} for lang in sorted(named)},
        "seconds": round(time.perf_counter() - started, 1),
        "unique_names_not_first": failures,
    }


def evaluate_definitions_independent(searcher: Searcher) -> dict:
    """An independent tree-sitter pass over every indexed file: each node of a definition type, at any
    depth (nested functions, methods of small classes, functions inside blocks included), is looked up
    by its plain name within its file (``definitions(name, path=file)``); it counts when the first hit
    is a definition of that name covering the node's line. Measures what the symbol table misses,
    which the table-driven pass above cannot see."""
    from index import syntax

    data = searcher.data
    found: dict[str, list[bool]] = defaultdict(list)
    misses: list[str] = []
    started = time.perf_counter()
    for row, doc in enumerate(data.docs):
        key = syntax.grammar_key(doc["path"], doc["language"])
        if key is None:
            continue
        source = data.doc_text(row).encode("utf-8")
        reader = syntax._Reader(key, source)
        stack = [syntax._parser(key).parse(source).root_node]
        while stack:
            node = stack.pop()
            stack.extend(node.named_children)
            if node.type not in syntax._KINDS[key] or node.type in ("module", "internal_module"):
                continue
            if node.type in ("struct_specifier", "union_specifier", "enum_specifier", "class_specifier",
                             "enum_constant") and node.child_by_field_name("body") is None:
                continue  # a use or forward declaration (or a plain enum constant), not a definition
            if node.type == "impl_item":  # named by the type it implements for, as the chunker names it
                of = node.child_by_field_name("type")
                name = syntax._clean(reader.text(of)).split("<")[0] if of is not None else None
            else:
                name = reader._name(node)
            if not name or not name.replace("_", "a").isalnum():
                continue  # operators, destructors, anonymous: no name a user would look up
            line = node.start_point.row + 1
            hits = searcher.definitions(name, path=doc["path"], k=1)
            ok = bool(hits) and hits[0].symbol is not None and hits[0].symbol.rsplit(".", 1)[-1] == name
            found[doc["language"]].append(ok)
            if not ok and len(misses) < 400:
                misses.append(f"{doc['path']}:{line} {node.type} {name} -> {hits[0].symbol if hits else None}")

    def rate(values: list[bool]) -> float:
        return round(sum(values) / max(len(values), 1), 4)

    every = [v for values in found.values() for v in values]
    return {"definitions": len(every), "named_first": rate(every),
            "by_language": {lang: {"definitions": len(v), "named_first": rate(v)} for lang, v in sorted(found.items())},
            "seconds": round(time.perf_counter() - started, 1), "misses": misses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-vectors", action="store_true", help="BM25 only (bm25 mode; quick)")
    parser.add_argument("--skip-definitions", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", choices=sorted(SETS), default="polyglot",
                        help="polyglot (the tuning set) or heldout (other projects, never tuned on)")
    args = parser.parse_args(argv)
    queries, _, index_name = SETS[args.set]
    tree = stage_tree(args.set)
    name = f"{index_name}-bm25" if args.no_vectors else index_name
    index_dir = common.build_cached_index(name, [tree], with_vectors=not args.no_vectors)
    data = open_index(index_dir)
    records = [json.loads(line) for line in queries.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = resolve(records, data)
    searcher = Searcher.from_index(data, SearchConfig(threads=args.threads), load_models=not args.no_vectors)
    modes = {"bm25": MODES["bm25"]} if args.no_vectors else MODES
    report = {"set": args.set, "questions": len(records), "languages": sorted({r["language"] for r in records}),
              "projects": {n: f"{p[0]}:{p[1]}=={p[2]}" for n, p in polyglot_sources.SETS[args.set].items()},
              "chunks": data.n_chunks, "files": len(data.docs), **evaluate_questions(searcher, records, answers, modes)}
    if not args.skip_definitions:
        report["definitions"] = evaluate_definitions(searcher)
        report["definitions_independent"] = evaluate_definitions_independent(searcher)
    goals = {}
    if "default" in report and args.set == "heldout":
        goals["default_S@5>=0.85"] = report["default"]["all"]["S@5"] >= 0.85
    elif "default" in report:
        goals["default_S@5>=0.90"] = report["default"]["all"]["S@5"] >= 0.90
        goals["default_S@1>=0.70"] = report["default"]["all"]["S@1"] >= 0.70
    if "definitions" in report:
        goals["definitions_named_first>=0.98"] = report["definitions"]["named_first"] >= 0.98
        goals["independent_definitions_named_first>=0.98"] = report["definitions_independent"]["named_first"] >= 0.98
    report["goals"] = goals
    report["goal_met"] = bool(goals) and all(goals.values())
    out = common.CACHE / f"{args.set}-eval.json"
    out.write_text(json.dumps(report, indent=1))
    common.emit("polyglot_questions", {"k": K, "vectors": not args.no_vectors}, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
