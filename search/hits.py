"""Hit: one search result in the contract's shape, and top_k: the one way results are cut to k.

Contract: every ranked list in this package is ordered by score descending, ties by ascending id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from .config import DEFAULT_INDEX_NAME

__all__ = ["DEFAULT_INDEX_NAME", "Hit", "format_hits_text", "merge_overlapping", "top_k"]

MERGE_MAX_LINES = 80  # two default line windows: a merged hit stays a readable region


@dataclass(frozen=True, slots=True)
class Hit:
    """One result: a chunk of an indexed file or record (INTERFACES.md section 3).

    ``score`` is higher-is-better; its scale depends on the mode: BM25, cosine, fused (RRF) or the
    cross-encoder logit after rerank. Lines are 1-based and inclusive. ``kind`` says what the chunk
    is (the index's chunk kinds: function, method, class, ..., module, section, key, text), ``symbol`` the
    qualified name of the definition it holds (or None), ``index`` the name of the index it came
    from (INTERFACES.md section 7; defaults keep older callers working).
    """

    id: str
    doc_id: str
    path: str
    start_line: int
    end_line: int
    language: str
    title: str
    score: float
    text: str
    kind: str = "text"
    symbol: str | None = None
    index: str = DEFAULT_INDEX_NAME

    def to_dict(self) -> dict[str, object]:
        """The JSON object of the contract (plain str/int/float values)."""
        return asdict(self)

    def with_score(self, score: float) -> Hit:
        """A copy of this hit with another score (hits are immutable)."""
        return replace(self, score=float(score))


def top_k(
    scores: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, scores), score descending, ties broken by ascending id.

    scores: float array (n,); ids: int array (n,) naming each score (default: positions 0..n-1).
    Returns (ids int64 (m,), scores (m,)) with m = min(k, n). argpartition keeps this O(n) for
    large n; ties at the cut are filled by ascending id, so the result never depends on the
    partition's internal order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores)
    ids = np.arange(len(scores), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if len(ids) != len(scores):
        raise ValueError(f"ids and scores differ in length: {len(ids)} != {len(scores)}")
    if k < len(scores):
        partition = np.argpartition(-scores, k - 1)
        kth_score = scores[partition[k - 1]]
        selected = partition[:k]
        # The partition's first k hold every score above the k-th and some equal to it. When they hold
        # every equal one too (the common case), that set is the answer; else ties go by ascending id.
        if np.count_nonzero(scores[selected] == kth_score) != np.count_nonzero(scores == kth_score):
            above = np.flatnonzero(scores > kth_score)
            tied = np.flatnonzero(scores == kth_score)
            tied = tied[np.argsort(ids[tied], kind="stable")][: k - len(above)]
            selected = np.concatenate([above, tied])
    else:
        selected = np.arange(len(scores))
    order = np.lexsort((ids[selected], -scores[selected]))
    selected = selected[order]
    return ids[selected], scores[selected]


def merge_overlapping(hits: Sequence[Hit], read_lines: Callable[[str, int, int], str]) -> list[Hit]:
    """Hits in the same order, where a hit whose lines overlap a better-ranked hit of the same
    document never comes back as a near-copy: it is folded into the better hit (one hit over the
    union of their lines, text read back with ``read_lines(path, start, end)``, keeping the better
    hit's id, title and score) while the union spans at most MERGE_MAX_LINES lines, and dropped
    otherwise. The pieces of one long function, or overlapping line windows, then come back as one
    region instead of k near-copies, and no merged hit grows past two windows."""
    kept: list[Hit] = []
    for hit in hits:
        for i, better in enumerate(kept):
            if (better.doc_id == hit.doc_id and better.path == hit.path
                    and hit.start_line <= better.end_line and hit.end_line >= better.start_line):
                start, end = min(better.start_line, hit.start_line), max(better.end_line, hit.end_line)
                if (start, end) != (better.start_line, better.end_line) and end - start + 1 <= MERGE_MAX_LINES:
                    kept[i] = replace(better, start_line=start, end_line=end, text=read_lines(better.path, start, end))
                break
        else:
            kept.append(hit)
    return kept


def format_hits_text(hits: list[Hit], snippet_lines: int = 3, snippet_chars: int = 300) -> str:
    """A human rendering of hits for the CLI: ``rank. path:start-end  score  title`` + a snippet."""
    if not hits:
        return "no hits"
    blocks = []
    for rank, hit in enumerate(hits, start=1):
        header = f"{rank:>3}. {hit.path}:{hit.start_line}-{hit.end_line}  [{hit.language}]  score={hit.score:.4f}"
        if hit.title and hit.title != hit.path:
            header += f"  {hit.title}"
        lines = [line for line in hit.text.splitlines() if line.strip()][:snippet_lines]
        snippet = "\n".join("     " + line[:snippet_chars] for line in lines)
        blocks.append(f"{header}\n{snippet}" if snippet else header)
    return "\n".join(blocks)
