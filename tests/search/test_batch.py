"""Batch mode: documents ranked by their best chunk, each docid once, as TREC run lines."""

from __future__ import annotations

import pytest

from search import Searcher, search_batch, search_documents
from tests.markers import holds_model


@pytest.fixture(scope="module")
@holds_model
def records_searcher(records_index):
    return Searcher.open(records_index, load_models=True)  # no vectors: cross-encoder only


@pytest.fixture(scope="module")
def bm25_records_searcher(records_index):
    """The same index with no model loaded: for what ranks without rerank."""
    return Searcher.open(records_index, load_models=False)


def test_search_documents_lists_each_doc_once(bm25_records_searcher):
    """It ranks d1 (many matching chunks) once, at the rank of its best chunk."""
    chunk_docs = [hit.doc_id for hit in bm25_records_searcher.bm25("mitochondria ATP", k=50)]
    assert chunk_docs.count("d1") >= 2  # the long record really spans several chunks
    ranked = search_documents(bm25_records_searcher, "mitochondria ATP", k=10, mode="bm25", rerank=False)
    doc_ids = [doc_id for doc_id, _ in ranked]
    assert len(doc_ids) == len(set(doc_ids))
    assert set(doc_ids) == {"d1", "d4"}
    assert doc_ids[0] == chunk_docs[0]
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)


@pytest.mark.model
def test_search_documents_with_rerank_keeps_scores_descending(records_searcher):
    """It puts reranked documents first with logit scores and keeps scores strictly ordered."""
    ranked = search_documents(records_searcher, "how do plants turn light into energy", k=3, mode="bm25", rerank=True)
    assert ranked[0][0] == "d2"
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


def test_search_batch_writes_trec_run_lines(bm25_records_searcher):
    """It writes `qid Q0 docid rank score tag`, ranks from 1, for every query."""
    lines = search_batch(
        bm25_records_searcher, [("q1", "mitochondria"), ("q2", "mitosis daughter cells")], k=2, mode="bm25", rerank=False
    )
    fields = [line.split() for line in lines]
    assert all(len(f) == 6 and f[1] == "Q0" and f[5] == "knowledge-mcp-bm25" for f in fields)
    assert [(f[0], f[3]) for f in fields][:1] == [("q1", "1")]
    assert ("q2", "d3", "1") in {(f[0], f[2], f[3]) for f in fields}
