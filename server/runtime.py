"""The serving runtime: background loading, then the execute workflow on the loaded fork server.

Contract: `Runtime.start()` returns at once and loads in the background (target choice, root
indexing, token counter, skills, fork server); `wait_ready()` waits for that (reporting progress)
and re-raises a load failure. Once loaded, calls go to the `Executor` (execute.py) and a
`Refresher` (freshness.py) keeps the served index fresh, switching the fork server to a new
version between calls. Nothing here touches stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from index import IndexStoreError, read_manifest, vector_coverage
from sandbox import ForkServerClient, TokenCounter

from .audit import AuditLog
from .broker import QueryBroker
from .config import ServerConfig
from .execute import Executor
from .freshness import (
    Refresher,
    Target,
    build_root_index,
    check_index,
    choose_target,
    index_dir_for_root,
    served_coverage,
    target_version,
)
from .results import Reply, TokenCounting
from .skills import SkillStore
from .state import SessionState, SessionStates
from .vectors import VectorBuilder, has_vectors
from .watch import RootWatcher

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], Awaitable[None]]
READY_POLL_S = 1.0


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _indexes_root(target: Target) -> bool:
    """True when the root's cached index exists and was built from that root (then start-up only
    merges what changed, server/watch.py; else it is built)."""
    try:
        manifest = read_manifest(target.index_dir)
    except IndexStoreError:
        return False
    return manifest.get("root") == str(target.root)


def _chunk_count(index_dir: Path) -> tuple[int, float]:
    try:
        return vector_coverage(index_dir)
    except IndexStoreError:
        return 0, 0.0


class Runtime:
    """Everything the tools need, loaded once per server process."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.states = SessionStates(config.sandbox.state_max_bytes)
        self.skills = SkillStore(config.skills_dir, config.sandbox)
        self.audit = AuditLog(config.audit_log)
        self.counter: TokenCounting | None = None  # set first while loading (load-failure replies use it)
        self.target: Target | None = None
        self.status = "not started"
        # Fraction of the first build done when a root is indexed (0 until it starts, 1 after): warm-up
        # progress notifications carry it with total 1. None when serving a built index.
        self.fraction: float | None = None
        self.ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self._client: ForkServerClient | None = None
        self._broker: QueryBroker | None = None  # Qdrant-backed indexes: queries on the children's behalf
        self._executor: Executor | None = None
        self._refresher: Refresher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._vectors_task: asyncio.Task[None] | None = None
        self._vector_builder: VectorBuilder | None = None
        self._watcher: RootWatcher | None = None  # a served root: inotify watcher + per-file delta
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_restarts = 0  # times the whole watcher task was found dead and restarted
        self._keyword_first = False  # this session's first build was BM25 only; vectors follow
        # Vector coverage of the version the fork server serves (search_code reports it).
        self.coverage = 0.0

    # -------------------------------------------------------------- loading

    @property
    def needs_client_roots(self) -> bool:
        """True when no index or root is configured: the first client's roots decide."""
        return self.config.index_dir is None and self.config.root is None

    @property
    def is_started(self) -> bool:
        return self._load_task is not None

    def start(self, client_roots: Sequence[Path] = (), cwd: Path | None = None) -> None:
        """Begin loading in the background (idempotent)."""
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load(list(client_roots), cwd))

    async def _load(self, client_roots: list[Path], cwd: Path | None) -> None:
        started = time.perf_counter()
        if self.config.index_dir is None:  # a root will be indexed: progress is its fraction from the start
            self.fraction = 0.0
        try:
            self.status = "loading the token counter"
            counter = self.counter = await asyncio.to_thread(TokenCounter.open, self.config.sandbox.token_encoding)
            self.status = "loading skills"
            await asyncio.to_thread(self.skills.load)
            self.status = "choosing the index"
            target = self.target = await asyncio.to_thread(choose_target, self.config, client_roots, cwd)
            if target.root is not None:
                self.status = "indexing the source root"  # progress text: no host path on the wire
                # Keyword first (issue 12): with no vectors yet, build BM25 only and serve it at once;
                # a low-priority process embeds in the background (server/vectors.py).
                self._keyword_first = self.config.index.with_vectors and not await asyncio.to_thread(
                    has_vectors, target.index_dir)
                if not await asyncio.to_thread(_indexes_root, target):
                    await asyncio.to_thread(build_root_index, target.root, target.index_dir, self.config,
                                            self._build_progress, False if self._keyword_first else None)
                # Fresh on every save: what changed while nothing watched becomes a delta merged over
                # the index (size + mtime, then content hashes; no full re-chunk), then a watcher.
                self.status = "checking the source root for changes"
                self._watcher = RootWatcher(self.config, target.root, target.index_dir, self._apply_deltas,
                                            busy=self._building_vectors)
                await self._watcher.prepare()
                self.fraction = 1.0
            for index_dir in target.index_dirs:
                await asyncio.to_thread(check_index, index_dir)
            broker = QueryBroker(target.indexes or [("default", target.index_dir)], self.config.search,
                                 self.config.qdrant_api_key, self.config.sandbox.max_backend_queries)
            if broker.is_needed:
                self.status = "connecting to Qdrant"
                self._broker = broker
                await asyncio.to_thread(broker.open)  # unreachable, wrong key, no collection: exit 3's error
            self.status = "starting the fork server"
            self._client = ForkServerClient(
                self.config.sandbox, index_dir=target.index_dir, indexes=target.indexes,
                search_config=self.config.search,
                log_level=self.config.log_level,
                broker=self._broker,
            )
            await self._client.start()
            version = await asyncio.to_thread(target_version, target)
            self._executor = Executor(self.config, self._client, self.skills, self.audit, counter, broker=self._broker)
            self.coverage = await asyncio.to_thread(served_coverage, target)
            self._refresher = Refresher(self.config, target, self._switch, None, version)
            self.status = "ready"
            logger.info("ready in %.0f ms, serving %s (vector coverage %.2f)", _ms(started), target.index_dir,
                        self.coverage)
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresher.run())
            if self._watcher is not None:
                self._watch_task = asyncio.get_running_loop().create_task(self._watcher.run())
            if target.root is not None and self.config.index.with_vectors:
                builder = self._vector_builder = VectorBuilder(target.root, target.index_dir, self.config.index,
                                                               self.config.refresh_debounce_s)
                self._vectors_task = asyncio.get_running_loop().create_task(builder.run())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting call
            self.load_error = exc
            self.status = f"failed: {exc}"
            logger.error("loading failed: %s", " ".join(str(exc).split()))
            logger.debug("traceback of the loading failure", exc_info=True)
        finally:
            self.ready.set()

    async def _switch(self, index_dir: Path) -> None:
        """The Refresher's switch: serve the index's current version, then note its vector coverage."""
        assert self._client is not None and self.target is not None
        await self._client.reload(index_dir)
        await self._note_coverage()
        logger.info("serving the new version: vector coverage %.2f", self.coverage)
        if self._watcher is not None:
            self._watcher.base_changed()  # the delta is recomputed against the new version

    async def _apply_deltas(self) -> None:
        """The watcher's apply: the fork server merges the delta just written before any later call."""
        assert self._client is not None
        await self._client.apply_deltas()
        await self._note_coverage()

    async def _note_coverage(self) -> None:
        """Vector coverage of what is served: the base's, with the chunks a delta hides taken out and
        the delta's own (no vectors until the next compaction) counted in."""
        assert self.target is not None
        coverage = await asyncio.to_thread(served_coverage, self.target)
        if self._watcher is not None:
            chunks, _ = await asyncio.to_thread(_chunk_count, self.target.index_dir)
            hidden, added = self._watcher.delta_shape
            live = max(chunks - hidden, 0)
            coverage = round(coverage * live / (live + added), 4) if live + added else 0.0
        self.coverage = coverage

    def _building_vectors(self) -> bool:
        """True while the background vector build runs (it folds the delta in too)."""
        return self._vector_builder is not None and self._vector_builder.state == "embedding"

    def _build_progress(self, stage: str, fraction: float) -> None:
        """From the build's thread: the fraction of the whole first build done (chunking is its first
        tenth when vectors are embedded, all of it otherwise)."""
        with_vectors = self.config.index.with_vectors and not self._keyword_first
        overall = (0.1 + 0.9 * fraction if stage == "embedding" else (0.1 if with_vectors else 1.0) * fraction)
        self.status = f"indexing the source root: {stage} {fraction:.0%}"
        self.fraction = max(self.fraction or 0.0, round(min(overall, 1.0), 4))  # never goes back

    async def wait_ready(self, progress: Progress | None = None) -> None:
        """Wait for loading; report progress every second; re-raise a loading failure."""
        started = time.perf_counter()
        while not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), READY_POLL_S)
            except asyncio.TimeoutError:
                if progress is not None:
                    await progress(round(_ms(started) / 1000.0, 1), f"warming up: {self.status}")
        if self.load_error is not None:
            raise self.load_error

    def configured_target(self) -> Target | None:
        """The target `--index`/`--root` name, before loading has chosen it (None: the client's roots
        decide); no checks: status may describe an index that is still being built."""
        if self.config.index_dir is not None:
            return Target(index_dir=self.config.index_dir)
        if self.config.root is not None:
            root = self.config.root.resolve()
            return Target(index_dir=index_dir_for_root(self.config.cache_dir, root), root=root)
        return None

    def watcher_state(self) -> str:
        """What keeps the served index fresh: for a served root the file watcher's state ("starting",
        "watching", "restarting" after its process died); for a served index "polling" while the
        refresh loop runs; "not started" while loading. A loop found dead is restarted and reported
        once as "restarted" (stale must never look fresh). Call on the event loop."""
        task = self._refresh_task
        if self._refresher is None or task is None:
            return "not started"
        restarted = False
        if task.done():
            problem = None if task.cancelled() else task.exception()
            logger.warning("the refresh loop had stopped (%s); restarting it", problem or "cancelled")
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresher.run())
            restarted = True
        watcher, watch_task = self._watcher, self._watch_task
        if watcher is not None and watch_task is not None and watch_task.done():
            problem = None if watch_task.cancelled() else watch_task.exception()
            watcher.last_error = f"the watcher had stopped: {problem or 'cancelled'}"
            logger.warning("%s; restarting it", watcher.last_error)
            self._watch_restarts += 1
            self._watch_task = asyncio.get_running_loop().create_task(watcher.run())
            restarted = True
        if restarted:
            return "restarted"
        return watcher.state if watcher is not None else "polling"

    def watch_status(self) -> dict[str, object] | None:
        """The file watcher's details for index_status (None when no root is watched)."""
        if self._watcher is None:
            return None
        return {**self._watcher.describe(), "restarts": self._watcher.restarts + self._watch_restarts,
                "process_pid": self._watcher.process_pid}

    async def settled(self) -> None:
        """Wait until every file change reported so far is merged into what calls see."""
        if self._watcher is not None:
            await self._watcher.settled()

    async def refresh_once(self) -> bool:
        """One freshness check; True when a new index version is now being served."""
        return False if self._refresher is None else await self._refresher.refresh_once()

    async def close(self) -> None:
        for task in (self._vectors_task, self._watch_task, self._refresh_task, self._load_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        broker, self._broker = self._broker, None
        if broker is not None:
            await asyncio.to_thread(broker.close)

    # -------------------------------------------------------------- calls (after wait_ready)

    def host_paths(self) -> dict[str, str]:
        """The configured host directories and their labels on the wire (see errors.hide_host_paths)."""
        config, target = self.config, self.target
        labelled = {
            config.state_dir: "<state dir>", config.cache_dir: "<cache dir>", config.index_dir: "<index dir>",
            config.root: "<root>", config.home_dir: "~",
            target and target.index_dir: "<index dir>", target and target.root: "<root>",
        }
        return {str(path): label for path, label in labelled.items() if path}

    def _loaded(self) -> Executor:
        assert self._executor is not None, "wait_ready() first"
        return self._executor

    async def execute(
        self, code: str, *, timeout_s: float, max_output_tokens: int, state: SessionState | None, session_id: str
    ) -> Reply:
        """execute_code: run the program and fit its reply to the budget."""
        return await self._loaded().execute(
            code, timeout_s=timeout_s, max_output_tokens=max_output_tokens, state=state, session_id=session_id
        )

    async def search(
        self, *, query: str, k: int, mode: str, rerank: bool, path_glob: str | None, language: str | None,
        max_output_tokens: int, session_id: str, index: str | list[str] | None = None,
    ) -> Reply:
        """search_code: the fixed search program in a child, then a fitted list of hits."""
        return await self._loaded().search(
            query=query, k=k, mode=mode, rerank=rerank, path_glob=path_glob, language=language,
            max_output_tokens=max_output_tokens, session_id=session_id, coverage=self.coverage, index=index,
        )

    async def lookup(self, code: str, *, max_output_tokens: int, session_id: str) -> Reply:
        """lookup_code: a fixed definitions/outline/grep program (execute.lookup_program) in a child."""
        return await self._loaded().lookup(code, max_output_tokens=max_output_tokens, session_id=session_id)
