"""The Qdrant copy of an index: one collection per index version, switched atomically by an alias.

Contract: ``push_to_qdrant(data, location, api_key, k1, b)`` writes the opened version ``data`` (an
``IndexData``) to Qdrant and records it in ``DIR/backend.json``; the local directory stays the
sidecar (documents, symbol table, chunk texts: ``read``/``files``/``grep``/``outline`` never ask the
network). Layout in Qdrant, per version ``<v>``:

- collection ``<collection>-<v>``: one point per chunk, id = the chunk's row in that version;
  vectors ``dense`` (our L2-normalised embedding, cosine; chunks without a vector have none) and
  ``bm25`` (a sparse vector: term id -> Lucene's saturated tf ``tf / (tf + k1 * (1 - b + b * dl /
  avgdl))`` from our tokenizer, with ``Modifier.IDF`` so Qdrant multiplies Lucene's idf
  ``ln(1 + (N - n + 0.5) / (n + 0.5))``: the same BM25 as search/sparse.py's "lucene" variant);
  payload path, start_line, end_line, language, title, kind, symbol, doc_id, chunk_id, text;
- collection ``<collection>-<v>-docs``: one point per document (no vectors), payload path and text,
  so a serving machine without the sources or the sidecar can still read a file;
- alias ``<collection>`` -> the newest version's collection, moved in one ``update_collection_aliases``
  call: a reader of the alias never sees a half-written version. Collections of versions that no
  longer exist locally are deleted after the switch.

Only chunks whose text changed were re-embedded by the local build (vectors are reused by chunk
key); every point is re-uploaded, because BM25 weights depend on the corpus-wide average length.
The API key comes from the caller (the CLI reads ``KNOWLEDGE_MCP_QDRANT_API_KEY``); it is never
logged and never written to ``backend.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFormatError, IndexStoreError

__all__ = [
    "QdrantLocation",
    "QdrantUnavailableError",
    "connect_qdrant",
    "push_to_qdrant",
    "read_backend",
    "sparse_query",
]

log = logging.getLogger(__name__)

BACKEND_FILE = "backend.json"
DENSE = "dense"
SPARSE = "bm25"
UPLOAD_BATCH = 256
_COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,100}")


class QdrantUnavailableError(IndexStoreError):
    """Qdrant cannot be reached, refused the key, or lacks the collection (exit 3: what to check)."""

    exit_code = 3


@dataclass(frozen=True, slots=True)
class QdrantLocation:
    """Where an index's Qdrant copy lives: a server ``url`` (http/https) or a local-mode ``path``."""

    collection: str
    url: str | None = None
    path: str | None = None
    shards: int = 1  # a cluster: docs/SCALE.md (about 10-15M points per shard)
    replicas: int = 1  # copies of each shard (2: a node may fail without losing reads)
    edge: bool = False  # path is a folder of qdrant-edge-py shards (the embedded engine), one per version

    def __post_init__(self) -> None:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of a Qdrant url (--qdrant-url) and a local path (--qdrant-path)")
        if not _COLLECTION.fullmatch(self.collection):
            raise ValueError(
                f"collection name {self.collection!r} is not valid; use letters, digits, '_' and '-' (e.g. 'myrepo')"
            )
        if self.shards < 1 or self.replicas < 1:
            raise ValueError(f"shards and replicas must be >= 1, got {self.shards} and {self.replicas}")

    @property
    def where(self) -> str:
        """A human name for messages (never includes the key)."""
        return self.url if self.url is not None else f"local path {self.path}"

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "url": self.url, "path": self.path, "shards": self.shards,
                "replicas": self.replicas, "engine": "edge" if self.edge else "client"}


def connect_qdrant(location: QdrantLocation, api_key: str | None = None, timeout_s: float = 10.0) -> Any:
    """A ``QdrantClient`` for ``location`` (local mode for a path), checked with one cheap call.

    Raises QdrantUnavailableError naming the URL and what to check (server running, URL, key).
    For the embedded engine (``edge``) there is nothing to connect to: returns None.
    """
    if location.edge:
        Path(location.path).mkdir(parents=True, exist_ok=True)
        return None
    from qdrant_client import QdrantClient

    try:
        if location.path is not None:
            client = QdrantClient(path=location.path)
        else:
            client = QdrantClient(url=location.url, api_key=api_key, timeout=max(1, int(timeout_s)))
        client.get_collections()
    except Exception as exc:  # noqa: BLE001 - any failure of the first call is "cannot use this Qdrant"
        raise QdrantUnavailableError(_unavailable_message(location, exc)) from None
    return client


def _unavailable_message(location: QdrantLocation, exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    if location.path is not None:
        return (
            f"cannot open the local Qdrant storage at {location.path} ({type(exc).__name__}: {text}); check the path "
            "exists and that no other process (a server, another build) holds it: local mode allows one process"
        )
    if "401" in text or "403" in text or "Unauthorized" in text or "Forbidden" in text:
        return (
            f"Qdrant at {location.url} refused the API key (HTTP {401 if '401' in text else 403}); set "
            "KNOWLEDGE_MCP_QDRANT_API_KEY to the cluster's key"
        )
    return (
        f"cannot reach Qdrant at {location.url} ({type(exc).__name__}); check that the server is running, that "
        "the URL (scheme, host, port 6333) is right and reachable from here, and the API key "
        "(KNOWLEDGE_MCP_QDRANT_API_KEY)"
    )


def version_collection(collection: str, version: str) -> str:
    """The collection holding one index version (the alias ``collection`` points at the newest)."""
    return f"{collection}-{re.sub(r'[^A-Za-z0-9_-]+', '_', version)}"


def bm25_document_weights(tf: Any, doc_lengths: np.ndarray, k1: float, b: float) -> Any:
    """CSR (chunks x terms) of Lucene's saturated tf; Qdrant's IDF modifier supplies the idf."""
    import scipy.sparse as sp

    tf = sp.csr_matrix(tf, dtype=np.float64)
    lengths = np.asarray(doc_lengths, dtype=np.float64)
    mean = lengths.mean() if len(lengths) else 0.0
    norms = np.ones_like(lengths) if mean <= 0 else 1.0 - b + b * lengths / mean
    rows = np.repeat(np.arange(tf.shape[0]), np.diff(tf.indptr))
    data = tf.data / (tf.data + k1 * norms[rows])
    return sp.csr_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape)


def sparse_query(term_counts: dict[int, int]) -> Any:
    """The Qdrant query vector of a tokenized query: term id -> how often the query repeats it."""
    from qdrant_client import models

    ids = sorted(term_counts)
    return models.SparseVector(indices=ids, values=[float(term_counts[i]) for i in ids])


def push_to_qdrant(data: Any, location: QdrantLocation, api_key: str | None, k1: float, b: float) -> str:
    """Write ``data``'s version to Qdrant, switch the alias, record it in backend.json; returns the
    version's collection name. A version already pushed is left as is (builds that changed nothing)."""
    from qdrant_client import models

    version = data.version_dir.name
    physical = version_collection(location.collection, version)
    client = connect_qdrant(location, api_key)
    try:
        if location.edge:
            if not (Path(location.path) / physical).is_dir():
                _write_edge_version(data, Path(location.path) / physical, k1, b)
        else:
            if not client.collection_exists(physical):
                _write_version(client, data, physical, location, k1, b, models)
            client.update_collection_aliases(
                change_aliases_operations=_alias_switch(client, location.collection, physical, models)
            )
        record = {
            "backend": "qdrant",
            **location.to_dict(),
            "bm25": {"variant": "lucene", "k1": k1, "b": b},
        }
        previous = read_backend(data.path)
        kept = {v: c for v, c in ((previous or {}).get("versions") or {}).items() if (data.path / "versions" / v).is_dir()}
        record["versions"] = {**kept, version: physical}
        _write_json_atomic(data.path / BACKEND_FILE, record)
        for old_version, old_collection in ((previous or {}).get("versions") or {}).items():
            if old_version in record["versions"]:
                continue
            if location.edge:
                shutil.rmtree(Path(location.path) / old_collection, ignore_errors=True)
                continue
            for name in (old_collection, old_collection + "-docs"):
                if client.collection_exists(name):
                    client.delete_collection(name)
    finally:
        if client is not None:
            client.close()
    return physical


def _alias_switch(client: Any, alias: str, physical: str, models: Any) -> list[Any]:
    operations = []
    if any(a.alias_name == alias for a in client.get_aliases().aliases):
        operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    operations.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=physical, alias_name=alias)))
    return operations


def _write_version(client: Any, data: Any, physical: str, location: QdrantLocation, k1: float, b: float,
                   models: Any) -> None:
    """Create ``physical`` (and its -docs twin) and upload every chunk and document; a failure
    deletes both, so a half-written version is never left behind."""
    vectors_config = {}
    if data.vectors is not None:
        # Originals on disk, int8 copies in RAM (4x less), rescored with the originals: docs/SCALE.md.
        vectors_config[DENSE] = models.VectorParams(
            size=int(data.vectors.shape[1]), distance=models.Distance.COSINE, on_disk=True,
            quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
        )
    spread = {"shard_number": location.shards, "replication_factor": location.replicas}
    try:
        client.create_collection(
            physical,
            vectors_config=vectors_config,
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            on_disk_payload=True,  # chunk texts are read only for the final hits
            **spread,
        )
        client.create_collection(physical + "-docs", vectors_config={}, on_disk_payload=True, **spread)
        weights = bm25_document_weights(data.tf, data.doc_lengths, k1, b)
        chunk_doc = np.asarray(data.chunk_doc)
        lines = np.asarray(data.chunk_lines)
        mask = np.asarray(data.vector_mask) if data.vectors is not None else None
        points = []
        for row in range(data.n_chunks):
            start, stop = weights.indptr[row], weights.indptr[row + 1]
            vector: dict[str, Any] = {
                SPARSE: models.SparseVector(indices=weights.indices[start:stop].tolist(), values=weights.data[start:stop].tolist())
            }
            if mask is not None and mask[row]:
                vector[DENSE] = np.asarray(data.vectors[row], dtype=np.float32).tolist()
            points.append(models.PointStruct(id=row, vector=vector,
                                             payload=_chunk_payload(data, row, chunk_doc, lines)))
            if len(points) >= UPLOAD_BATCH:
                client.upsert(physical, points, wait=True)
                points = []
        if points:
            client.upsert(physical, points, wait=True)
        documents = [
            models.PointStruct(id=row, vector={}, payload={"path": doc["path"], "text": data.doc_text(row)})
            for row, doc in enumerate(data.docs)
        ]
        for start in range(0, len(documents), UPLOAD_BATCH):
            client.upsert(physical + "-docs", documents[start : start + UPLOAD_BATCH], wait=True)
        log.info("wrote %d chunks and %d documents to Qdrant collection %s", data.n_chunks, len(documents), physical)
    except BaseException:
        for name in (physical, physical + "-docs"):
            try:
                client.delete_collection(name)
            except Exception:  # noqa: BLE001 - best effort; the original error matters
                pass
        raise


def _chunk_payload(data: Any, row: int, chunk_doc: np.ndarray, lines: np.ndarray) -> dict[str, Any]:
    doc = data.docs[int(chunk_doc[row])]
    return {
        "path": doc["path"], "doc_id": str(doc["doc_id"]), "language": doc["language"],
        "start_line": int(lines[row, 0]), "end_line": int(lines[row, 1]), "title": data.chunk_titles[row],
        "kind": data.kind_of(row), "symbol": data.symbol_of(row), "chunk_id": data.chunk_ids[row],
        "text": data.chunk_text(row),
    }


def _write_edge_version(data: Any, shard_dir: Path, k1: float, b: float) -> None:
    """One qdrant-edge-py shard per version (the embedded engine: same vectors, payload and IDF
    modifier as a collection); written under a temporary name and renamed when complete."""
    import qdrant_edge as edge

    vectors = {}
    if data.vectors is not None:
        vectors[DENSE] = edge.EdgeVectorParams(size=int(data.vectors.shape[1]), distance=edge.Distance.Cosine)
    config = edge.EdgeConfig(vectors=vectors, sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)})
    partial = shard_dir.with_name(shard_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shard = edge.EdgeShard.create(str(partial), config)
    try:
        weights = bm25_document_weights(data.tf, data.doc_lengths, k1, b)
        chunk_doc, lines = np.asarray(data.chunk_doc), np.asarray(data.chunk_lines)
        mask = np.asarray(data.vector_mask) if data.vectors is not None else None
        points = []
        for row in range(data.n_chunks):
            start, stop = weights.indptr[row], weights.indptr[row + 1]
            vector: dict[str, Any] = {SPARSE: edge.SparseVector(
                indices=weights.indices[start:stop].tolist(), values=weights.data[start:stop].tolist())}
            if mask is not None and mask[row]:
                vector[DENSE] = np.asarray(data.vectors[row], dtype=np.float32).tolist()
            points.append(edge.Point(id=row, vector=vector, payload=_chunk_payload(data, row, chunk_doc, lines)))
            if len(points) >= UPLOAD_BATCH:
                shard.update(edge.UpdateOperation.upsert_points(points))
                points = []
        if points:
            shard.update(edge.UpdateOperation.upsert_points(points))
        shard.flush()
    finally:
        shard.close()
    os.replace(partial, shard_dir)


def read_backend(index_dir: Path) -> dict[str, Any] | None:
    """``DIR/backend.json`` (None for an in-process index); IndexFormatError when unreadable."""
    path = Path(index_dir) / BACKEND_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(Path(index_dir), f"unreadable {BACKEND_FILE} ({exc})", "a JSON backend record",
                               what="backend record") from None
    if not isinstance(record, dict) or record.get("backend") != "qdrant":
        raise IndexFormatError(Path(index_dir), record, {"backend": "qdrant"}, what="backend record")
    return record


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
