"""Queries of a Qdrant-backed index from inside the sandbox: the child's end of the query broker.

Contract: the sandbox child has no network (seccomp) and never sees the Qdrant key. Its first-stage
retrieval goes over one inherited stream socket to the broker in the server process
(server/broker.py), which queries Qdrant for it. ``BrokerLink`` is created in the fork server (no
socket yet) and shared by every Searcher of a Qdrant-backed index; each child attaches its own
descriptor after the fork (``attach``). ``BrokeredRetriever`` is the retriever behind the seam
(search/retrievers.py) that speaks this protocol. Tokenizer, query encoder, filters, merging and
rerank stay in the child, as for every backend.

Wire (both ways): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

- request ``{"op": "bm25"|"dense"|"hybrid", "index": NAME, "version": V, "k": N,
  "terms": [[term_id, count], ...], "vector": [float, ...], "allow" | "deny": BASE64}`` where
  ``allow``/``deny`` are little-endian int32 chunk rows (the filter, or its complement when smaller);
- reply ``{"rows": [...], "scores": [...]}`` (score descending, ties by ascending row) or
  ``{"error": {"kind": KIND, "message": TEXT}}`` with KIND one of ``BROKER_ERROR_KINDS``.

``parse_request`` is the broker's validator: every field of a request is hostile input (sizes, types,
ranges), checked before anything reaches Qdrant. Fusion weights, ``rrf_k`` and candidate depth are
the broker's own (the server's SearchConfig), never the child's.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, QueryError

__all__ = [
    "BROKER_ERROR_KINDS",
    "BROKER_FRAME",
    "BROKER_MAX_ROWS",
    "BROKER_MAX_TERMS",
    "BrokerLink",
    "BrokerQuery",
    "BrokeredRetriever",
    "MAX_BROKER_REPLY_BYTES",
    "MAX_BROKER_REQUEST_BYTES",
    "MAX_FILTER_ROWS",
    "encode_frame",
    "parse_request",
]

BROKER_FRAME = struct.Struct(">I")
# A request holds at most a 4,096-float vector (~90 KB of JSON), 1,024 terms and a filter of
# MAX_FILTER_ROWS rows (~1.4 MB of base64): a frame above this is refused unread.
MAX_FILTER_ROWS = 262_144
MAX_BROKER_REQUEST_BYTES = 2 * 1024 * 1024
MAX_BROKER_REPLY_BYTES = 256 * 1024
MAX_VECTOR_DIM = 4096
BROKER_MAX_TERMS = 1024
# The most rows one query may ask: the API's k is at most 100 (sandbox.MAX_K) and search() reads
# four times max(k, rerank_depth) first-stage rows before merging overlapping hits.
BROKER_MAX_ROWS = 400
BROKER_ERROR_KINDS = frozenset({"unavailable", "refused", "limit", "deadline"})
_OPS = frozenset({"bm25", "dense", "hybrid"})
_KEYS = frozenset({"op", "index", "version", "k", "terms", "vector", "allow", "deny"})


def encode_frame(value: Mapping[str, Any]) -> bytes:
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return BROKER_FRAME.pack(len(body)) + body


class BrokerLink:
    """The child's socket to its broker (none in the fork server: ``attach`` runs in each child)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def attach(self, fd: int) -> None:
        self._fd = fd

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request and read its reply; raises BackendUnavailableError / QueryError."""
        if self._fd is None:
            raise BackendUnavailableError(
                "this Qdrant-backed index is queried through the server's broker, which this process lacks; "
                "use `knowledge-mcp search --index DIR` or the MCP server"
            )
        frame = encode_frame(request)
        if len(frame) - BROKER_FRAME.size > MAX_BROKER_REQUEST_BYTES:
            raise QueryError("the query (vector, terms and filter) is too large for the Qdrant broker; narrow the filter")
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view):]
            (length,) = BROKER_FRAME.unpack(self._read_exactly(BROKER_FRAME.size))
            if length > MAX_BROKER_REPLY_BYTES:
                raise BackendUnavailableError(f"the Qdrant broker sent a reply of {length} bytes; refused")
            reply = json.loads(self._read_exactly(length))
        except (OSError, EOFError, ValueError) as exc:
            self._fd = None  # the channel is gone or out of step: later calls fail the same way
            raise BackendUnavailableError(
                f"the Qdrant broker closed this call's channel ({type(exc).__name__}); the call's query "
                "budget or deadline may be spent, or the server is shutting down"
            ) from None
        if not isinstance(reply, dict):
            raise BackendUnavailableError("the Qdrant broker sent a malformed reply")
        error = reply.get("error")
        if isinstance(error, dict):
            message = str(error.get("message", "refused"))
            if error.get("kind") == "refused":
                raise QueryError(message)
            raise BackendUnavailableError(message)
        return reply

    def _read_exactly(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self._fd, min(left, 65536))
            if not chunk:
                raise EOFError("the broker closed the channel")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


class BrokeredRetriever:
    """First-stage retrieval of one Qdrant-backed index through the broker (see module docstring)."""

    def __init__(self, link: BrokerLink, index_name: str, version: str, has_dense: bool,
                 term_ids: Mapping[str, int], n_chunks: int) -> None:
        self._link = link
        self._index = index_name
        self._version = version
        self._has_dense = has_dense
        self._term_ids = term_ids
        self._n_chunks = n_chunks

    @property
    def has_dense(self) -> bool:
        return self._has_dense

    def close(self) -> None:
        """Nothing to release: the channel belongs to the call."""

    def bm25(self, terms: Sequence[str], depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        counts = self._counts(terms)
        if not counts or _is_empty(allowed):
            return _empty()
        return self._ask("bm25", depth, allowed, terms=counts)

    def dense(self, vector: np.ndarray, depth: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if _is_empty(allowed):
            return _empty()
        return self._ask("dense", depth, allowed, vector=vector)

    def hybrid(self, terms: Sequence[str], vector: np.ndarray, depth: int, candidates: int,
               weights: tuple[float, float], rrf_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        # candidates, weights and rrf_k: the broker uses the server's SearchConfig (the same values).
        if _is_empty(allowed):
            return _empty()
        return self._ask("hybrid", depth, allowed, terms=self._counts(terms), vector=vector)

    def _counts(self, terms: Sequence[str]) -> list[list[int]]:
        counts = Counter(self._term_ids[term] for term in terms if term in self._term_ids)
        return [[term, count] for term, count in sorted(counts.items())][:BROKER_MAX_TERMS]

    def _ask(self, op: str, depth: int, allowed: np.ndarray | None, *, terms: list[list[int]] | None = None,
             vector: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        request: dict[str, Any] = {"op": op, "index": self._index, "version": self._version,
                                   "k": int(min(depth, BROKER_MAX_ROWS))}
        if terms is not None:
            request["terms"] = terms
        if vector is not None:
            request["vector"] = [float(x) for x in np.asarray(vector, dtype=np.float32)]
        request.update(_filter_field(allowed))
        reply = self._link.call(request)
        rows, scores = reply.get("rows"), reply.get("scores")
        if not isinstance(rows, list) or not isinstance(scores, list) or len(rows) != len(scores):
            raise BackendUnavailableError("the Qdrant broker sent a malformed reply")
        ids = np.asarray(rows, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self._n_chunks):
            raise BackendUnavailableError(
                "Qdrant returned chunk rows this index version does not have: the collection does not match "
                "the served index (rebuild with `index build ... --backend qdrant`)"
            )
        return ids, np.asarray(scores, dtype=np.float64)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


def _is_empty(allowed: np.ndarray | None) -> bool:
    return allowed is not None and not allowed.any()


def _filter_field(allowed: np.ndarray | None) -> dict[str, str]:
    """The filter as allowed rows, or as excluded rows when fewer (a path filter over most files)."""
    if allowed is None:
        return {}
    allow = np.flatnonzero(allowed)
    deny = np.flatnonzero(~np.asarray(allowed, dtype=bool))
    key, rows = ("allow", allow) if len(allow) <= len(deny) else ("deny", deny)
    if len(rows) > MAX_FILTER_ROWS:
        raise QueryError(
            f"the path/language filter selects {len(allow):,} of {len(allowed):,} chunks; on a Qdrant-backed index a "
            f"filter may include or exclude at most {MAX_FILTER_ROWS:,}; narrow the path glob"
        )
    return {key: base64.b64encode(rows.astype("<i4").tobytes()).decode("ascii")}


# ------------------------------------------------------------------------------------------ broker side


@dataclass(frozen=True, slots=True)
class BrokerQuery:
    """One validated request (see ``parse_request``)."""

    op: str
    index: str
    version: str
    k: int
    terms: dict[int, int]
    vector: list[float] | None
    allow: np.ndarray | None  # int64 rows a hit must be one of
    deny: np.ndarray | None  # int64 rows a hit must not be


def parse_request(body: bytes, served: Collection[str],
                  limits_of: Callable[[str, str], Mapping[str, int] | None]) -> BrokerQuery:
    """Validate one request body as hostile input; QueryError (its message goes back) when refused.

    ``served``: the served Qdrant-backed index names. ``limits_of(index, version)``: ``{"chunks": n,
    "vocab": terms, "dim": vector size (0: none)}`` of that index version, None when it has no Qdrant copy.
    """
    if len(body) > MAX_BROKER_REQUEST_BYTES:
        raise QueryError(f"request of {len(body)} bytes exceeds {MAX_BROKER_REQUEST_BYTES}")
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise QueryError("request is not UTF-8 JSON") from None
    if not isinstance(value, dict) or not set(value) <= _KEYS:
        raise QueryError(f"request must be an object with keys among {sorted(_KEYS)}")
    op, index, version, k = value.get("op"), value.get("index"), value.get("version"), value.get("k")
    if op not in _OPS:
        raise QueryError(f"op must be one of {sorted(_OPS)}")
    if not isinstance(index, str) or index not in served:
        raise QueryError(f"index {str(index)[:80]!r} is not a served Qdrant-backed index; served: {', '.join(sorted(served))}")
    bounds = limits_of(index, version) if isinstance(version, str) and 0 < len(version) <= 200 else None
    if bounds is None:
        raise QueryError(f"version {str(version)[:80]!r} of index {index!r} has no Qdrant collection")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= BROKER_MAX_ROWS:
        raise QueryError(f"k must be an integer in [1, {BROKER_MAX_ROWS}], got {str(k)[:40]}")
    terms = _parse_terms(value.get("terms"), op, bounds["vocab"])
    vector = _parse_vector(value.get("vector"), op, bounds["dim"])
    if "allow" in value and "deny" in value:
        raise QueryError("give allow or deny, not both")
    allow = _parse_rows(value["allow"], bounds["chunks"]) if "allow" in value else None
    deny = _parse_rows(value["deny"], bounds["chunks"]) if "deny" in value else None
    return BrokerQuery(op=op, index=index, version=version, k=k, terms=terms, vector=vector, allow=allow, deny=deny)


def _parse_terms(terms: object, op: str, vocab: int) -> dict[int, int]:
    if op == "dense":
        if terms is not None:
            raise QueryError("a dense query takes no terms")
        return {}
    if terms is None:
        terms = []
    if not isinstance(terms, list) or len(terms) > BROKER_MAX_TERMS:
        raise QueryError(f"terms must be a list of at most {BROKER_MAX_TERMS} [term_id, count] pairs")
    counts: dict[int, int] = {}
    for pair in terms:
        if (not isinstance(pair, list) or len(pair) != 2 or any(isinstance(x, bool) or not isinstance(x, int) for x in pair)
                or not 0 <= pair[0] < vocab or not 1 <= pair[1] <= 10_000 or pair[0] in counts):
            raise QueryError(f"each term must be a distinct [term_id in [0, {vocab}), count in [1, 10000]]")
        counts[pair[0]] = pair[1]
    if op == "bm25" and not counts:
        raise QueryError("a bm25 query needs at least one term")
    return counts


def _parse_vector(vector: object, op: str, dim: int) -> list[float] | None:
    if op == "bm25":
        if vector is not None:
            raise QueryError("a bm25 query takes no vector")
        return None
    if dim <= 0:
        raise QueryError("this index has no vectors; use a bm25 query")
    if not isinstance(vector, list) or len(vector) != dim or len(vector) > MAX_VECTOR_DIM:
        raise QueryError(f"vector must be a list of {dim} numbers")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in vector):
        raise QueryError("vector must hold finite numbers")
    return [float(x) for x in vector]


def _parse_rows(encoded: object, chunks: int) -> np.ndarray:
    if not isinstance(encoded, str) or len(encoded) > 4 * ((4 * MAX_FILTER_ROWS + 2) // 3):
        raise QueryError(f"a filter is base64 of at most {MAX_FILTER_ROWS} int32 rows")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError("a filter is base64 of int32 rows") from None
    if len(raw) % 4:
        raise QueryError("a filter is base64 of int32 rows")
    rows = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= chunks):
        raise QueryError(f"filter rows must be in [0, {chunks})")
    return np.unique(rows)
