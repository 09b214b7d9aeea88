"""SearchConfig: every knob of retrieval, fusion and reranking, validated once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import QueryError

__all__ = ["BM25_VARIANTS", "DEFAULT_INDEX_NAME", "SearchConfig", "SEARCH_MODES", "check_index_name"]

# Names accepted by SearchConfig.bm25_variant (formulas in search/sparse.py).
BM25_VARIANTS = frozenset({"lucene", "okapi"})
# Modes accepted by Searcher.search().
SEARCH_MODES = ("hybrid", "bm25", "semantic")
DEFAULT_INDEX_NAME = "default"  # an index served without a name (INTERFACES.md section 7)

# BM25/fusion defaults: the best mean nDCG@10 over SciFact and the code query set together (grid in
# benchmarks/RESULTS.md, where held-out cross-validated scores per set are reported as well).
DEFAULT_BM25_VARIANT = "lucene"
DEFAULT_K1 = 2.0
DEFAULT_B = 0.4
DEFAULT_OKAPI_EPSILON = 0.25
DEFAULT_RRF_K = 10
DEFAULT_FUSION_WEIGHTS = (1.0, 1.5)
DEFAULT_CANDIDATES = 100
DEFAULT_RERANK_DEPTH = 10  # 5-fold CV picked 10 on both sets (deeper reranking lowered nDCG@10)
DEFAULT_RERANK_MAX_TOKENS = 256  # SciFact: 128 wordpieces made rerank lower nDCG@10, 256 lifts it (RESULTS.md)
DEFAULT_RERANK_QUERY_MAX_TOKENS = 64
# One pair per run: INT8 dynamic quantisation scales activations over the whole batch, so padding and
# neighbours would change a pair's logit (by up to 0.2); per-pair runs measured as fast as batches here.
DEFAULT_RERANK_BATCH_SIZE = 1
# The second stage for code (search/coderank.py), chosen on the multi-language question set
# (benchmarks/RESULTS.md): first-stage hits it may reorder, the RRF-like constant of a place, the
# weight of the query spelling a definition's name, the factor of module-level code.
DEFAULT_CODE_RERANK_DEPTH = 20
DEFAULT_CODE_RANK_K = 10
DEFAULT_CODE_NAME_WEIGHT = 0.02
DEFAULT_CODE_MENTION_FACTOR = 0.7
MAX_RERANK_SEQUENCE_TOKENS = 512  # the cross-encoder's position-embedding limit


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Parameters of a Searcher; nothing here needs a reindex.

    bm25_variant: "lucene" or "okapi" (see search/sparse.py); k1, b: BM25 saturation and length
    normalisation; okapi_epsilon: rank_bm25's floor for negative idf (okapi only).
    rrf_k: the constant of reciprocal rank fusion; fusion_weights: (bm25, dense) weights of RRF.
    candidates: hits each retriever contributes before fusion (at least k is always used).
    rerank_depth: first-stage hits the cross-encoder rescores (at least k is always used).
    rerank_max_tokens / rerank_query_max_tokens: wordpiece tokens kept of the passage / query.
    rerank_model, embed_model: a folder or a package name; None = the packaged default.
    code_rerank_depth, code_rank_k, code_name_weight, code_mention_factor: the second stage for
    code hits (search/coderank.py), which reorders the first code_rerank_depth hits when rerank=True.
    threads: pairs the cross-encoder scores at once, on Python threads of the call sharing one
    single-threaded session (index.run_split); the query encoder always runs on the calling thread.
    """

    bm25_variant: str = DEFAULT_BM25_VARIANT
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    okapi_epsilon: float = DEFAULT_OKAPI_EPSILON
    rrf_k: int = DEFAULT_RRF_K
    fusion_weights: tuple[float, float] = DEFAULT_FUSION_WEIGHTS
    candidates: int = DEFAULT_CANDIDATES
    rerank_depth: int = DEFAULT_RERANK_DEPTH
    rerank_max_tokens: int = DEFAULT_RERANK_MAX_TOKENS
    rerank_query_max_tokens: int = DEFAULT_RERANK_QUERY_MAX_TOKENS
    rerank_batch_size: int = DEFAULT_RERANK_BATCH_SIZE
    rerank_model: str | None = None
    embed_model: str | None = None
    threads: int = 1
    code_rerank_depth: int = DEFAULT_CODE_RERANK_DEPTH
    code_rank_k: int = DEFAULT_CODE_RANK_K
    code_name_weight: float = DEFAULT_CODE_NAME_WEIGHT
    code_mention_factor: float = DEFAULT_CODE_MENTION_FACTOR

    def __post_init__(self) -> None:
        if self.bm25_variant not in BM25_VARIANTS:
            raise ValueError(f"bm25_variant must be one of {sorted(BM25_VARIANTS)}, got {self.bm25_variant!r}")
        _check_finite("k1", self.k1, low=0.0)
        _check_finite("b", self.b, low=0.0, high=1.0)
        _check_finite("okapi_epsilon", self.okapi_epsilon, low=0.0)
        if len(self.fusion_weights) != 2:
            raise ValueError(f"fusion_weights must be (bm25, dense), got {self.fusion_weights!r}")
        for name, weight in zip(("bm25", "dense"), self.fusion_weights):
            _check_finite(f"fusion_weights[{name}]", weight, low=0.0)
        if sum(self.fusion_weights) <= 0:
            raise ValueError("fusion_weights must not both be 0")
        _check_int("rrf_k", self.rrf_k, low=0)
        _check_int("candidates", self.candidates, low=1)
        _check_int("rerank_depth", self.rerank_depth, low=1)
        _check_int("rerank_query_max_tokens", self.rerank_query_max_tokens, low=1)
        _check_int("rerank_max_tokens", self.rerank_max_tokens, low=1)
        if self.rerank_query_max_tokens + self.rerank_max_tokens + 3 > MAX_RERANK_SEQUENCE_TOKENS:
            raise ValueError(
                "rerank_query_max_tokens + rerank_max_tokens + 3 special tokens must be <= "
                f"{MAX_RERANK_SEQUENCE_TOKENS}, got {self.rerank_query_max_tokens} + {self.rerank_max_tokens}"
            )
        _check_int("rerank_batch_size", self.rerank_batch_size, low=1)
        _check_int("threads", self.threads, low=1)
        _check_int("code_rerank_depth", self.code_rerank_depth, low=1)
        _check_int("code_rank_k", self.code_rank_k, low=0)
        _check_finite("code_name_weight", self.code_name_weight, low=0.0)
        _check_finite("code_mention_factor", self.code_mention_factor, low=0.0, high=1.0)
        for name in ("rerank_model", "embed_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a folder path, a package name or None, got {value!r}")


def _check_finite(name: str, value: float, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def _check_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_index_name(name: object) -> str:
    """A served index's name: 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise QueryError(
            f"index name {name!r} is not valid; use 1-64 letters, digits, '_', '.' or '-' (e.g. 'backend')"
        )
    return name
