"""A 100k-chunk synthetic index written with index's own format writer (no embedding pass).

Text: seeded Zipf-distributed pseudo-words in code-like lines (10 chunks per file, 4 file kinds);
vectors: seeded random unit vectors; ``index.write_index`` writes it as a build would (the same
HNSW ANN index above the approx threshold, the packaged query encoder), so serving reads what it
would read.
Embedding 100k real chunks takes about an hour here, hence the synthetic corpus.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import common

from index import FORMAT_VERSION, IndexConfig, IndexContents, tokenize, write_index

SEED = 20240601
VOCAB_SIZE = 30_000
CHUNKS_PER_FILE = 10
LINES_PER_CHUNK = 8
WORDS_PER_LINE = (4, 12)
DIM = 384
KINDS = (("py", "python"), ("md", "markdown"), ("js", "javascript"), ("go", "go"))


def pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = set()
    while len(words) < count:
        length = int(rng.integers(3, 11))
        words.add("".join(rng.choice(letters, size=length)))
    return sorted(words)


def write_synthetic_index(n_chunks: int, name: str | None = None) -> Path:
    """Build (once; cached under benchmarks/.cache/) an index of n_chunks synthetic chunks."""
    out = common.CACHE / (name or f"synthetic-{n_chunks}-format{FORMAT_VERSION}")
    if (out / "CURRENT").is_file():
        return out
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    vocab_words = np.array(pseudo_words(rng, VOCAB_SIZE))
    zipf = 1.0 / np.arange(1, VOCAB_SIZE + 1) ** 1.05
    zipf /= zipf.sum()
    n_lines = n_chunks * LINES_PER_CHUNK
    line_lengths = rng.integers(*WORDS_PER_LINE, size=n_lines)
    # One draw for the whole corpus: a p= draw per line would rebuild the 30k-entry CDF each time.
    words = vocab_words[rng.choice(VOCAB_SIZE, size=int(line_lengths.sum()), p=zipf)]
    line_ends = np.cumsum(line_lengths)
    line_texts = [" ".join(words[end - length : end]) for end, length in zip(line_ends, line_lengths)]
    next_line = iter(line_texts)
    docs, doc_texts, chunk_ids, chunk_titles, chunk_texts = [], [], [], [], []
    chunk_doc, chunk_lines = [], []
    for file_number in range((n_chunks + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE):
        extension, language = KINDS[file_number % len(KINDS)]
        path = f"pkg{file_number % 97:02d}/sub{file_number % 7}/file{file_number:06d}.{extension}"
        lines = []
        for chunk_number in range(min(CHUNKS_PER_FILE, n_chunks - len(chunk_ids))):
            start = len(lines) + 1
            lines.extend(next(next_line) for _ in range(LINES_PER_CHUNK))
            end = len(lines)
            chunk_ids.append(f"{path}:{start}-{end}")
            chunk_titles.append(f"section {chunk_number}")
            chunk_texts.append("\n".join(lines[start - 1 : end]))
            chunk_doc.append(len(docs))
            chunk_lines.append((start, end))
        docs.append({"doc_id": path, "path": path, "language": language, "title": path})
        doc_texts.append("\n".join(lines) + "\n")
    term_ids: dict[str, int] = {}
    rows, cols, counts, lengths = [], [], [], np.zeros(len(chunk_ids), dtype=np.float32)
    for row, text in enumerate(chunk_texts):
        terms = tokenize(text)
        lengths[row] = len(terms)
        for term, count in Counter(terms).items():
            rows.append(row)
            cols.append(term_ids.setdefault(term, len(term_ids)))
            counts.append(count)
    vocab = sorted(term_ids)
    remap = np.empty(len(term_ids), dtype=np.int64)
    for position, term in enumerate(vocab):
        remap[term_ids[term]] = position
    tf = sp.csr_matrix((np.array(counts, np.float32), (np.array(rows), remap[np.array(cols)])), shape=(len(chunk_ids), len(vocab)))
    tf.sort_indices()
    vectors = rng.standard_normal((len(chunk_ids), DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.frombuffer(b"".join(hashlib.sha256(t.encode()).digest()[:16] for t in chunk_texts), np.uint8)
    contents = IndexContents(
        docs=docs,
        doc_texts=doc_texts,
        chunk_ids=chunk_ids,
        chunk_titles=chunk_titles,
        chunk_doc=np.array(chunk_doc, np.int32),
        chunk_lines=np.array(chunk_lines, np.int32),
        chunk_texts=chunk_texts,
        chunk_keys=keys.reshape(-1, 16),
        vocab=vocab,
        tf=tf,
        doc_lengths=lengths,
        vectors=vectors,
    )
    write_index(out, contents, {"root": "synthetic", "synthetic": {"seed": SEED, "chunks": len(chunk_ids)}},
                IndexConfig(threads=2, model_cache_dir=common.CACHE / "models"))
    print(f"[bench] wrote {out} ({len(chunk_ids)} chunks) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def synthetic_queries(count: int, seed: int = 7) -> list[str]:
    """Queries of 2-6 words drawn from the same vocabulary, skewed to mid-frequency words."""
    rng = np.random.default_rng(SEED)
    words = pseudo_words(rng, VOCAB_SIZE)
    picker = np.random.default_rng(seed)
    return [" ".join(words[int(i)] for i in picker.integers(20, 5000, size=int(picker.integers(2, 7)))) for _ in range(count)]
