"""Build the MCP server (tools, resources, lifespan) and run it on stdio; `execute_once` for `exec`.

Contract: `build_server` returns an `MCPServer` whose lifespan starts loading in the background and
returns at once, so `initialize` is answered immediately; tools wait for warm-up themselves. (`serve`
answers a first `initialize` even before this module loads: handshake.py.) stdout
belongs to the MCP stream (the SDK's stdio transport owns it; `wire.serve_stdio` answers malformed
lines that the SDK would drop); logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from mcp.server.mcpserver import MCPServer

from index import read_manifest
from sandbox import api_reference

from .config import ServerConfig
from .freshness import stale_files, summarize_manifest
from .handshake import INSTRUCTIONS, SERVER_NAME, FirstLine
from .results import Reply
from .runtime import Runtime
from .state import SessionState
from .tools import register_tools, status_document
from .wire import serve_stdio

__all__ = ["build_server", "execute_once", "run_stdio_server"]

logger = logging.getLogger(__name__)

def build_server(config: ServerConfig, runtime: Runtime | None = None) -> MCPServer:
    """The MCPServer with the tools and two resources, backed by `runtime`."""
    runtime = runtime or Runtime(config)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[Runtime]:
        if not runtime.needs_client_roots:
            runtime.start()  # background: initialize is answered at once
        try:
            yield runtime
        finally:
            await runtime.close()

    server: MCPServer = MCPServer(
        SERVER_NAME, instructions=INSTRUCTIONS, lifespan=lifespan, log_level=config.log_level
    )
    register_tools(server, runtime)

    @server.resource(
        "knowledge://api", name="api", title="Sandbox API reference", mime_type="text/markdown",
        description="Every global a program can use, with signatures and examples (same text as help()).",
    )
    async def api_reference_text() -> str:
        return api_reference()  # static: the same text as help() in a program, no warm-up needed

    @server.resource(
        "knowledge://index", name="index", title="Index summary", mime_type="application/json",
        description="What is indexed: files, chunks, models, indexed_at, whether sources changed since (stale), "
                    "and the index_status tool's `indexes` (vector coverage, pending changes, watcher).",
    )
    async def index_summary() -> str:
        if not runtime.is_started:
            runtime.start()
        await runtime.wait_ready()
        status = await status_document(runtime)
        summary = await asyncio.to_thread(describe_index, runtime)
        return json.dumps({**summary, **status}, indent=2, sort_keys=True)

    return server


def describe_index(runtime: Runtime) -> dict[str, Any]:
    """The knowledge://index document: manifest summary, indexed_at, stale flag, what is served."""
    target = runtime.target
    assert target is not None
    manifest = read_manifest(target.index_dir)
    summary = summarize_manifest(manifest)
    root = target.root or (Path(manifest["root"]) if manifest.get("root") else None)
    watch = runtime.watch_status()
    if watch is not None:  # a watched root: saved files are served from the delta; stale = not merged yet
        changed = ["(changes not merged yet)"] * int(watch["events_pending"]) if watch["state"] == "watching" \
            else ["(the file watcher is not running: changes may be missed until it restarts)"]
    else:
        changed = stale_files(manifest, root)
    return {
        **{key: value for key, value in summary.items() if key not in ("root", "sources")},  # host paths
        "indexed_at": summary.get("built_at"),
        "stale": bool(changed),
        "stale_examples": changed[:5],
        "auto_refresh": target.root is not None,
        "skills": [skill["name"] for skill in runtime.skills.infos()],
    }


def run_stdio_server(config: ServerConfig, source: BinaryIO, first: FirstLine | None = None) -> None:
    """Serve MCP on `source` (the claimed stdin) and stdout until the client disconnects; `first` is
    the line handshake.py read (and maybe answered) before this module loaded."""
    server = build_server(config)
    anyio.run(serve_stdio, server, source, first)


def execute_once(config: ServerConfig, code: str, *, timeout_s: float, max_output_tokens: int) -> Reply:
    """Load, run one program as execute_code would, shut down; returns the processed reply."""

    async def main() -> Reply:
        runtime = Runtime(config)
        runtime.start()

        last_message = ""

        async def progress(seconds: float, message: str) -> None:
            # A terminal wants to hear when the stage changes, not once a second (the build has its
            # own progress bar).
            nonlocal last_message
            if message != last_message:
                logger.info("%s (%.0f s elapsed)", message, seconds)
                last_message = message

        try:
            await runtime.wait_ready(progress)
            return await runtime.execute(
                code, timeout_s=timeout_s, max_output_tokens=max_output_tokens,
                state=SessionState(config.sandbox.state_max_bytes), session_id="exec",
            )
        finally:
            await runtime.close()

    return asyncio.run(main())
