"""Searcher end to end on a tiny built index: modes, filters before the cut, rerank, read, files, bad input."""

from __future__ import annotations

import os
from pathlib import Path
import threading
import time

import math
from collections import Counter

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from search import PathNotFoundError, QueryError, SearchConfig, Searcher

from .corpus import SOURCE_FILES
from .helpers import assert_same_ranking

MODES = ["bm25", "semantic", "hybrid"]


def _chunk_tokens(data) -> list[list[str]]:
    """Each chunk's indexed terms, rebuilt from the stored term frequencies."""
    tf = data.tf.tocsr()
    return [
        [data.vocab[t] for t, n in zip(tf.indices[tf.indptr[i] : tf.indptr[i + 1]], tf.data[tf.indptr[i] : tf.indptr[i + 1]]) for _ in range(int(n))]
        for i in range(data.n_chunks)
    ]


def _brute_force_lucene(token_lists, query_terms, k1, b):
    n_docs = len(token_lists)
    avgdl = sum(map(len, token_lists)) / n_docs
    doc_freq = Counter(t for tokens in token_lists for t in set(tokens))
    scores = []
    for tokens in token_lists:
        counts, norm = Counter(tokens), 1 - b + b * len(tokens) / avgdl
        scores.append(
            sum(
                math.log(1 + (n_docs - doc_freq[t] + 0.5) / (doc_freq[t] + 0.5)) * counts[t] / (counts[t] + k1 * norm)
                for t in query_terms
                if counts[t]
            )
        )
    return np.array(scores)


def test_searcher_bm25_ranks_like_brute_force(bm25_searcher):
    """It returns exactly the chunks a textbook Lucene BM25 ranks first, with the same scores."""
    from index import tokenize

    data, config = bm25_searcher.data, bm25_searcher.config
    token_lists = _chunk_tokens(data)
    position = {chunk_id: i for i, chunk_id in enumerate(data.chunk_ids)}
    for query in ["http server request", "parse config file", "retry connection errors", "json fetch url"]:
        expected = _brute_force_lucene(token_lists, tokenize(query), config.k1, config.b)
        expected_ids = sorted(np.flatnonzero(expected > 0), key=lambda i: (-expected[i], i))[:5]
        hits = bm25_searcher.bm25(query, k=5)
        assert_same_ranking(
            [position[h.id] for h in hits], [h.score for h in hits], expected_ids, expected[expected_ids]
        )


def test_searcher_okapi_equals_rank_bm25_on_the_index(code_index_bm25):
    """It scores every chunk of a built index like rank_bm25.BM25Okapi over the same terms."""
    searcher = Searcher.open(code_index_bm25, SearchConfig(bm25_variant="okapi", k1=1.5, b=0.75), load_models=False)
    data = searcher.data
    reference = BM25Okapi(_chunk_tokens(data), k1=1.5, b=0.75)
    position = {chunk_id: i for i, chunk_id in enumerate(data.chunk_ids)}
    from index import tokenize

    for query in ["start server socket", "slugify title words", "upstream request"]:
        expected = reference.get_scores(tokenize(query))
        hits = searcher.bm25(query, k=data.n_chunks)
        got = np.zeros(data.n_chunks)
        got[[position[h.id] for h in hits]] = [h.score for h in hits]
        np.testing.assert_allclose(got, np.where(expected > 0, expected, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.model
@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("open a listening socket and serve forever", "src/app/server.py"),
        ("turn a title into a url slug", "src/app/util.py"),
        ("download with exponential backoff", "http/client.py"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_searcher_modes_find_the_answer(searcher, mode, query, path):
    """It ranks the chunk holding the answer first in every mode, with hits in the contract shape."""
    hits = searcher.search(query, k=3, mode=mode, rerank=False)
    assert hits and hits[0].path == path
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hit = hits[0]
    lines = SOURCE_FILES[path].split("\n")[hit.start_line - 1 : hit.end_line]
    assert "\n".join(lines).strip() in SOURCE_FILES[path]
    assert hit.language == "python" and hit.doc_id == path


@pytest.mark.model
@pytest.mark.parametrize("rerank", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_searcher_filters_apply_before_the_cut(searcher, mode, rerank):
    """It fills k from the filtered chunks even when better chunks lie outside the filter."""
    matching = [i for i, doc in enumerate(searcher.data.chunk_doc) if searcher.data.docs[doc]["path"].startswith("http/")]
    assert len(matching) >= 2
    query = "handle a server request on a connection url"  # best answers are in src/app/server.py
    hits = searcher.search(query, k=2, mode=mode, rerank=rerank, path="http/**")
    assert len(hits) == 2 and all(h.path.startswith("http/") for h in hits)
    markdown = searcher.search("install with pip", k=10, mode=mode, rerank=rerank, language="markdown")
    assert markdown and {h.language for h in markdown} == {"markdown"}
    assert {h.path for h in markdown} <= {"docs/guide.md", "README.md"}


@pytest.mark.model
def test_searcher_path_and_language_combine(searcher):
    """It applies both filters at once and returns nothing when no file passes both."""
    assert all(h.path == "http/client.py" for h in searcher.hybrid("retry", k=5, path="http/*", language="python"))
    assert searcher.hybrid("retry", k=5, path="http/*", language="markdown") == []


@pytest.mark.model
@pytest.mark.parametrize("mode", MODES)
def test_searcher_rerank_applies_after_any_mode(searcher, cross_encoder, mode):
    """It reorders the prose of the first stage by cross-encoder logit among the places prose holds;
    with the code stage neutral, code keeps its first-stage places (the MS MARCO model lowers code
    rankings); cut to k."""
    searcher = Searcher.from_index(searcher.data, SearchConfig(rerank_max_tokens=128, code_name_weight=0.0,
                                                               code_mention_factor=1.0), cross_encoder=cross_encoder)
    query = "how does the HTTP server map URL paths to handlers with its router"
    depth = searcher.config.rerank_depth
    hits = searcher.search(query, k=depth, mode=mode, rerank=True)
    first_stage = searcher.search(query, k=depth, mode=mode, rerank=False)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    prose = [place for place, hit in enumerate(first_stage) if hit.language == "markdown"]
    assert prose and len(prose) < len(first_stage), "the corpus must give a mixed first stage"
    for place, (hit, before) in enumerate(zip(hits, first_stage)):
        if place not in prose:
            assert hit.id == before.id and hit.score == before.score
    by_logit = searcher.rerank(query, [first_stage[place] for place in prose])
    assert [hits[place].id for place in prose] == [h.id for h in by_logit]
    assert [h.id for h in searcher.search(query, k=3, mode=mode, rerank=True)] == [h.id for h in hits[:3]]


@pytest.mark.model
def test_searcher_code_stage_puts_definitions_before_module_code(searcher):
    """With rerank=True, module-level code yields its place to a definition ranked just below it, the
    definition the query names stays first, and the hits are the first stage's, reordered."""
    query = "get a url with retries"
    first_stage = searcher.search(query, k=searcher.config.code_rerank_depth, mode="bm25", rerank=False)
    hits = searcher.search(query, k=len(first_stage), mode="bm25", rerank=True)
    assert sorted(h.id for h in hits) == sorted(h.id for h in first_stage)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].symbol == first_stage[0].symbol == "get_url"
    module = next(place for place, hit in enumerate(first_stage) if hit.kind == "module")
    below = first_stage[module + 1]
    assert below.kind in ("function", "class", "method"), "the corpus must put a definition under module code"
    place = {hit.id: n for n, hit in enumerate(hits)}
    assert place[below.id] < place[first_stage[module].id]


@pytest.mark.model
def test_searcher_rerank_accepts_hit_dicts(searcher):
    """It takes hits as contract dicts (the JSON form) and refuses anything else."""
    hits = searcher.bm25("config", k=3)
    assert [h.id for h in searcher.rerank("config", [h.to_dict() for h in hits])] == [
        h.id for h in searcher.rerank("config", hits)
    ]
    with pytest.raises(QueryError, match="rerank\\(\\) takes hits"):
        searcher.rerank("config", ["not a hit"])


def test_searcher_read_returns_exact_lines(bm25_searcher):
    """It returns whole files and 1-based inclusive line ranges, clamping an end past the file."""
    text = SOURCE_FILES["src/app/util.py"]
    assert bm25_searcher.read("src/app/util.py") == text
    assert bm25_searcher.read("src/app/util.py", 4, 5) == "".join(text.splitlines(keepends=True)[3:5])
    assert bm25_searcher.read("src/app/util.py", 4, 4).startswith("def parse_config(text):")
    assert bm25_searcher.read("src/app/util.py", 16, 10_000) == "".join(text.splitlines(keepends=True)[15:])
    assert bm25_searcher.read("./src/app/util.py", 1, 1) == '"""Small helpers."""\n'


def test_searcher_read_unknown_path_is_lookup_error(bm25_searcher):
    """It raises PathNotFoundError, a LookupError that points at files()."""
    with pytest.raises(LookupError, match="files\\(\\)") as caught:
        bm25_searcher.read("src/missing.py")
    assert isinstance(caught.value, PathNotFoundError)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(0, None, "start_line must be an integer >= 1"), (5, 4, "end_line 4 is before start_line 5"),
     (1000, None, "past the end"), ("1", None, "start_line must be an integer"), (1, 2.5, "end_line must be an integer")],
)
def test_searcher_read_bad_range_is_query_error(bm25_searcher, start, end, message):
    """It raises QueryError (a ValueError) saying what is wrong with the range."""
    with pytest.raises(ValueError, match=message) as caught:
        bm25_searcher.read("src/app/util.py", start, end)
    assert isinstance(caught.value, QueryError)


def test_searcher_files_lists_sorted_matches(bm25_searcher):
    """It lists every indexed path sorted, or those matching a glob."""
    assert bm25_searcher.files() == sorted(SOURCE_FILES)
    assert bm25_searcher.files("src/**/*.py") == ["src/app/server.py", "src/app/util.py"]
    assert bm25_searcher.files("http/*") == ["http/client.py"]
    assert bm25_searcher.files("*.md") == ["README.md", "docs/guide.md"]
    assert bm25_searcher.files("nothing/*") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": "   "}, "query is empty"),
        ({"query": None}, "query must be a string"),
        ({"query": "x" * 10_001}, "limit is 10000"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": "5"}, "k must be an integer >= 1"),
        ({"k": True}, "k must be an integer >= 1"),
        ({"mode": "fuzzy"}, "unknown mode 'fuzzy'; use one of hybrid, bm25, semantic"),
        ({"rerank": "yes"}, "rerank must be True or False"),
        ({"language": "klingon"}, "unknown language 'klingon'; this index holds: javascript, markdown, python"),
        ({"path": ""}, "path glob must be a non-empty string"),
    ],
)
def test_searcher_search_rejects_bad_arguments(bm25_searcher, kwargs, message):
    """It raises QueryError with a message naming the bad argument and the fix."""
    arguments = {"query": "server", "k": 3, "mode": "bm25", "rerank": False} | kwargs
    with pytest.raises(QueryError, match=message.replace("(", "\\(")):
        bm25_searcher.search(**arguments)


def test_searcher_without_vectors_refuses_semantic_and_says_hybrid_is_bm25(records_index):
    """Without vectors (coverage 0: --no-vectors, or still being built in the background) semantic
    refuses and says why; hybrid and the default search rank with BM25 alone and say so by coverage 0."""
    searcher = Searcher.open(records_index, load_models=False)
    assert not searcher.has_vectors and searcher.vector_coverage == 0.0
    with pytest.raises(QueryError, match="no vectors yet.*background.*--no-vectors"):
        searcher.semantic("atp")
    with pytest.raises(QueryError, match="no vectors yet"):
        searcher.search("atp", mode="semantic", rerank=False)
    bm25 = [(hit.id, hit.score) for hit in searcher.bm25("atp", k=3)]
    assert bm25 and bm25[0][0].startswith(("d1", "d4"))
    assert [(hit.id, hit.score) for hit in searcher.hybrid("atp", k=3)] == bm25
    assert searcher.search("atp", k=3, rerank=False)[0].id == bm25[0][0]  # BM25's best (regions then merged)


@pytest.mark.model
def test_searcher_without_models_refuses_rerank(code_index):
    """It explains that rerank and semantic need the models it did not load."""
    searcher = Searcher.open(code_index, load_models=False)
    with pytest.raises(QueryError, match="rerank=False"):
        searcher.search("server", mode="bm25", rerank=True)
    with pytest.raises(QueryError, match="load_models=False"):
        searcher.semantic("server")
    assert searcher.search("server", mode="bm25", rerank=False)


def _thread_ids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _settles_to(expected: set[str], wait_s: float = 5.0) -> bool:
    """True once no thread outside `expected` is left (a joined thread's task lingers for a moment
    in /proc while the OS tears it down)."""
    deadline = time.monotonic() + wait_s
    while _thread_ids() - expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.model
def test_searcher_open_and_warm_start_no_threads(code_index):
    """It opens and warms both models without leaving a thread behind (the fork server forks right
    after), and reranking on two threads gives exactly the logits of one."""
    before = _thread_ids()
    searcher = Searcher.open(code_index, SearchConfig(threads=2, rerank_max_tokens=128), load_models=True)
    searcher.warm_before_fork()
    started = {t: Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in _thread_ids() - before}
    assert searcher.has_models and not started, (started, threading.enumerate())  # none started (others may end)
    two = searcher.search("read a file", k=5)
    settled = _thread_ids()  # this test process does not hold faiss to one thread as the fork server does
    searcher.search("open a file", k=5)
    assert _settles_to(settled), _thread_ids() - settled  # each call's rerank threads were joined
    one = Searcher.open(code_index, SearchConfig(threads=1, rerank_max_tokens=128)).search("read a file", k=5)
    assert [(h.id, h.score) for h in two] == [(h.id, h.score) for h in one]


def test_searcher_search_returns_distinct_regions_where_chunks_overlap(tmp_path):
    """It folds overlapping line windows of one file into one hit, so k hits are k regions; bm25()
    still returns the raw chunks."""
    from index import IndexConfig, build_index

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("".join(f"zebracorn line {i}\n" for i in range(1, 201)))
    (tmp_path / "src" / "other.txt").write_text("zebracorn once\n")
    out = tmp_path / "index"
    build_index([tmp_path / "src"], out, IndexConfig(with_vectors=False, threads=1))
    searcher = Searcher.open(out, load_models=False)
    raw = searcher.bm25("zebracorn", k=10)
    assert any(a.path == b.path and a.start_line <= b.end_line and b.start_line <= a.end_line
               for i, a in enumerate(raw) for b in raw[i + 1 :]), "the corpus should give overlapping windows"
    hits = searcher.search("zebracorn", k=3, mode="bm25", rerank=False)
    assert len(hits) == 3
    for i, a in enumerate(hits):
        assert a.text == searcher.read(a.path, a.start_line, a.end_line).rstrip("\n")
        for b in hits[i + 1 :]:
            assert a.path != b.path or a.end_line < b.start_line or b.end_line < a.start_line, (a, b)
