"""The query broker: Qdrant queries on behalf of sandbox children, in the server process.

Contract: the sandbox child has no network and the fork server never connects to Qdrant nor holds
the API key. The broker owns the Qdrant clients (one per Qdrant; local mode: one per storage folder)
and the key (from ``ServerConfig``: the environment or the state dir's config.toml; never logged,
never sent anywhere but to Qdrant). Each call's child has its own stream socket to it: the fork
server creates the pair at fork and hands our end over (SCM_RIGHTS) when the child starts the call
(sandbox/forkserver.py); ``ForkServerClient`` calls ``call_started(id, sock, timeout_s)`` and, when
the call answered or died, ``call_ended(id)``, which closes the socket: nothing written afterwards
is read. A child reaches only its own call's socket, and through it only the served Qdrant-backed
indexes (and only versions recorded in their backend.json).

Per call it enforces: frames of at most ``MAX_BROKER_REQUEST_BYTES`` (a bigger length prefix closes
the channel unread), every request validated as hostile input (``search.parse_request``: types,
sizes, term ids, vector size, filter rows, k <= ``BROKER_MAX_ROWS``), at most
``SandboxConfig.max_backend_queries`` queries, and the call's deadline (a query still running at
the deadline is answered with an error and the channel closed). Candidate depth, fusion weights and
``rrf_k`` are the server's SearchConfig, never the child's. Qdrant failures become an error reply
the child raises as RuntimeError: unreachable (lost mid-call: the server stays up and the client
reconnects on the next query), a wrong key, a missing collection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index import QdrantLocation, QdrantUnavailableError, connect_qdrant, read_backend, read_manifest
from search import (
    BROKER_FRAME,
    MAX_BROKER_REQUEST_BYTES,
    BrokerQuery,
    EdgeRetriever,
    QdrantRetriever,
    QueryError,
    SearchConfig,
    encode_frame,
    parse_request,
)

__all__ = ["QueryBroker", "qdrant_backed"]

logger = logging.getLogger(__name__)

BROKER_THREADS = 4  # queries in flight at once (a hung Qdrant holds a thread until the client's timeout)
CLIENT_TIMEOUT_S = 10


def qdrant_backed(indexes: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The (name, dir) pairs whose index was built with ``--backend qdrant``."""
    return [(name, Path(directory)) for name, directory in indexes if read_backend(Path(directory)) is not None]


@dataclass(slots=True)
class _Version:
    retriever: QdrantRetriever
    lock: threading.Lock
    limits: dict[str, int]
    where: str
    collection: str


@dataclass(slots=True)
class _Call:
    request_id: str
    sock: socket.socket
    deadline: float
    task: asyncio.Task[None] | None = None
    queries: int = 0


class QueryBroker:
    """See module docstring. ``open()`` (blocking) connects and checks every served collection."""

    def __init__(self, indexes: Sequence[tuple[str, Path]], config: SearchConfig, api_key: str | None,
                 max_queries: int) -> None:
        self._dirs = dict(qdrant_backed(indexes))
        self._config = config
        self._api_key = api_key
        self._max_queries = max_queries
        self._clients: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
        self._versions: dict[tuple[str, str], _Version] = {}
        self._resolve_lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._counts: dict[str, int] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def __repr__(self) -> str:  # never the key
        return f"QueryBroker(indexes={sorted(self._dirs)})"

    @property
    def is_needed(self) -> bool:
        """True when a served index is Qdrant-backed."""
        return bool(self._dirs)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Connect to every served index's Qdrant and check its current version's collection (blocking).
        Raises index.QdrantUnavailableError (exit 3) naming the URL and what to check."""
        for name, directory in self._dirs.items():
            read_manifest(directory)  # missing or broken: the index package's error (exit 3)
            self._resolve(name, _current_version(directory), must_exist=True)

    def close(self) -> None:
        for call in list(self._calls.values()):
            self._end(call)
        for client, _lock in self._clients.values():
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        for version in self._versions.values():
            if isinstance(version.retriever, EdgeRetriever):
                with contextlib.suppress(Exception):
                    version.retriever.close()
        self._clients.clear()
        self._versions.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ calls (ForkServerClient)
    def call_started(self, request_id: str, sock: socket.socket, timeout_s: float) -> None:
        """Serve ``sock`` for call ``request_id`` until ``timeout_s`` from now (runs on the event loop)."""
        previous = self._calls.pop(request_id, None)
        if previous is not None:  # a retried start: the first child is gone
            self._end(previous)
        call = _Call(request_id=request_id, sock=sock, deadline=time.monotonic() + timeout_s)
        self._calls[request_id] = call
        call.task = asyncio.get_running_loop().create_task(self._serve(call))

    def call_ended(self, request_id: str) -> None:
        call = self._calls.pop(request_id, None)
        if call is not None:
            self._end(call)

    def queries_of(self, request_id: str) -> int:
        """How many queries call ``request_id`` made (for its audit line; forgotten once read)."""
        return self._counts.pop(request_id, 0)

    def _end(self, call: _Call) -> None:
        if call.task is not None and not call.task.done():
            call.task.cancel()
        with contextlib.suppress(OSError):
            call.sock.close()
        if call.queries:
            self._counts[call.request_id] = call.queries
            while len(self._counts) > 1024:  # calls nobody asked about
                self._counts.pop(next(iter(self._counts)))

    async def _serve(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=call.sock, limit=MAX_BROKER_REQUEST_BYTES + 1)
        except OSError:
            return
        try:
            while True:
                header = await _within(reader.readexactly(BROKER_FRAME.size), call.deadline)
                (length,) = BROKER_FRAME.unpack(header)
                if length > MAX_BROKER_REQUEST_BYTES:
                    await _reply(writer, _error("refused", f"request frame of {length} bytes exceeds "
                                                f"{MAX_BROKER_REQUEST_BYTES}; channel closed"))
                    return
                body = await _within(reader.readexactly(length), call.deadline)
                if call.queries >= self._max_queries:
                    await _reply(writer, _error("limit", f"this call used its {self._max_queries} Qdrant queries; "
                                                "ask fewer, broader queries (k up to 100) per program"))
                    return
                call.queries += 1
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    await _reply(writer, _error("deadline", "the call's time limit was reached"))
                    return
                future = loop.run_in_executor(self._executor(), self._answer, body)
                try:
                    answer = await asyncio.wait_for(asyncio.shield(future), remaining)
                except asyncio.TimeoutError:
                    await _reply(writer, _error("deadline", "the call's time limit was reached while Qdrant answered"))
                    return
                await _reply(writer, answer)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
            return  # the child finished, died, or its deadline passed
        finally:
            writer.close()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(BROKER_THREADS, thread_name_prefix="qdrant-broker")
        return self._pool

    # ------------------------------------------------------------------ one query (worker thread)
    def _answer(self, body: bytes) -> dict[str, Any]:
        try:
            query = parse_request(body, self._dirs.keys(), self._limits_of)
            version = self._resolve(query.index, query.version)
        except QueryError as exc:
            return _error("refused", str(exc))
        except QdrantUnavailableError as exc:
            return _error("unavailable", str(exc))
        try:
            with version.lock:
                ids, scores = self._run(version.retriever, query)
        except Exception as exc:  # noqa: BLE001 - every Qdrant failure becomes a clear reply
            return _error("unavailable", _failure_message(exc, version))
        return {"rows": [int(x) for x in ids], "scores": [float(x) for x in scores]}

    def _run(self, retriever: QdrantRetriever, query: BrokerQuery) -> tuple[Any, Any]:
        config = self._config
        if query.op == "bm25":
            return retriever.bm25_rows(query.terms, query.k, query.allow, query.deny)
        if query.op == "dense":
            return retriever.dense_rows(query.vector, query.k, query.allow, query.deny)
        return retriever.hybrid_rows(query.terms, query.vector, query.k, max(query.k, config.candidates),
                                     config.fusion_weights, config.rrf_k, query.allow, query.deny)

    def _limits_of(self, index: str, version: str) -> Mapping[str, int] | None:
        try:
            return self._resolve(index, version).limits
        except QueryError:
            return None

    def _resolve(self, index: str, version: str, must_exist: bool = False) -> _Version:
        """The retriever of one served index version (connected once; backend.json re-read for a
        version not seen yet, such as a rebuild's). QueryError when the version has no Qdrant copy."""
        key = (index, version)
        known = self._versions.get(key)
        if known is not None:
            return known
        with self._resolve_lock:
            known = self._versions.get(key)
            if known is not None:
                return known
            directory = self._dirs[index]
            record = read_backend(directory) or {}
            collection = (record.get("versions") or {}).get(version)
            if not isinstance(collection, str):
                raise QueryError(f"version {version[:80]!r} of index {index!r} has no Qdrant collection")
            location = QdrantLocation(collection=str(record["collection"]), url=record.get("url"),
                                      path=record.get("path"), edge=record.get("engine") == "edge")
            limits = _version_limits(directory, version)
            if location.edge:
                retriever, lock = _open_edge(location, collection), threading.Lock()
            else:
                client, lock = self._client(location)
                if must_exist:
                    self._check_collection(client, location, collection, directory, version)
                retriever = QdrantRetriever(client, collection, limits["dim"] > 0, {}, location.where)
            found = _Version(retriever=retriever, lock=lock, limits=limits, where=location.where, collection=collection)
            self._versions[key] = found
            return found

    def _client(self, location: QdrantLocation) -> tuple[Any, threading.Lock]:
        key = ("url", location.url) if location.url is not None else ("path", str(location.path))
        if key not in self._clients:
            # Local mode is not thread-safe: its queries take the lock; a server's client does not need it,
            # but one lock per Qdrant keeps the order of a call's queries simple.
            self._clients[key] = (connect_qdrant(location, self._api_key, timeout_s=CLIENT_TIMEOUT_S), threading.Lock())
        return self._clients[key]

    @staticmethod
    def _check_collection(client: Any, location: QdrantLocation, collection: str, directory: Path,
                          version: str) -> None:
        try:
            exists = client.collection_exists(collection)
        except Exception as exc:  # noqa: BLE001
            raise QdrantUnavailableError(_failure_message(exc, None, location.where)) from None
        if not exists:
            raise QdrantUnavailableError(
                f"Qdrant at {location.where} has no collection {collection!r} (version {version} of {directory}); "
                f"rebuild with `knowledge-mcp index build ... --out {directory} --backend qdrant`"
            )


def _current_version(directory: Path) -> str:
    """The name of the version CURRENT points at (read_manifest has checked it exists)."""
    return (Path(directory) / "CURRENT").read_text(encoding="utf-8").strip()


def _version_limits(directory: Path, version: str) -> dict[str, int]:
    """Bounds of a request on one version: chunk rows, BM25 term ids, vector size (0: no vectors)."""
    try:
        manifest = json.loads((Path(directory) / "versions" / version / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise QueryError(f"version {version[:80]!r} of this index is not on the serving machine") from None
    embed = (manifest.get("models") or {}).get("embed") or {}
    has_vectors = "vectors.npy" in (manifest.get("artefacts") or {})
    return {
        "chunks": int(manifest.get("chunk_count") or 0),
        "vocab": int((manifest.get("bm25") or {}).get("vocab_size") or 0),
        "dim": int(embed.get("dim") or 0) if has_vectors else 0,
    }


def _open_edge(location: QdrantLocation, collection: str) -> EdgeRetriever:
    shard_dir = Path(str(location.path)) / collection
    if not shard_dir.is_dir():
        raise QdrantUnavailableError(f"no qdrant-edge shard {collection!r} under {location.path}; rebuild with "
                                     "`knowledge-mcp index build ... --backend qdrant --qdrant-edge`")
    import qdrant_edge

    return EdgeRetriever(qdrant_edge.EdgeShard.load(str(shard_dir)), True, {}, f"edge shard {shard_dir}")


def _failure_message(exc: BaseException, version: _Version | None, where: str | None = None) -> str:
    """What went wrong with Qdrant, in words a program's author can act on (never the key, never our
    internals). The client reconnects by itself on the next query once Qdrant is back."""
    where = where or (version.where if version is not None else "?")
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return (f"Qdrant at {where} refused the API key (HTTP {status}); the server's "
                "KNOWLEDGE_MCP_QDRANT_API_KEY must be the cluster's key")
    text = " ".join(str(exc).split())
    if status == 404 or "not found" in text.lower():
        collection = version.collection if version is not None else "?"
        return (f"Qdrant at {where} has no collection {collection!r} any more (deleted or renamed); rebuild the index "
                "with `knowledge-mcp index build ... --backend qdrant`")
    if status is not None:
        return f"Qdrant at {where} answered HTTP {status}; see the Qdrant server's log"
    return (f"Qdrant at {where} is unreachable ({type(exc).__name__}): the connection was lost during this call. "
            "The server keeps running and reconnects on the next query; check that Qdrant is up and reachable")


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message[:1000]}}


async def _reply(writer: asyncio.StreamWriter, value: Mapping[str, Any]) -> None:
    writer.write(encode_frame(value))
    await writer.drain()


async def _within(awaitable: Any, deadline: float) -> Any:
    return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
