"""The sandbox: validate agent programs in the server, run them in a locked-down forked child.

Names resolve on first use (`__getattr__`, PEP 562; why: docs/ARCHITECTURE.md).
"""

from importlib import import_module
from typing import Any

# submodule -> the public names it defines
_EXPORTS = {
    "api": ("API_NAMES", "RESERVED_NAMES", "SandboxHit", "api_reference", "api_signatures", "build_api"),
    "config": ("DEFAULT_STATE_MAX_BYTES", "MAX_TIMEOUT_S", "PolicyConfig", "SandboxConfig"),
    "errors": ("BusyError", "ForkServerError", "PolicyError"),
    "jsonfit": ("CUT_MARK", "DEPTH_MARK", "MAX_JSON_DEPTH", "cut_json", "json_extent"),
    "forkserver_client": ("ForkServerClient",),
    "policy": ("CompiledProgram", "compile_program", "compile_skill"),
    "protocol": ("OUTCOMES", "TIMING_KEYS", "ExecRequest"),
    "runner": ("RunResult", "run_program"),
    "tokens": ("TokenCounter",),
    "validate": ("validate_source",),
}
_SOURCES = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "API_NAMES",
    "DEFAULT_STATE_MAX_BYTES",
    "MAX_TIMEOUT_S",
    "CUT_MARK",
    "DEPTH_MARK",
    "MAX_JSON_DEPTH",
    "OUTCOMES",
    "TIMING_KEYS",
    "BusyError",
    "CompiledProgram",
    "ExecRequest",
    "ForkServerClient",
    "ForkServerError",
    "PolicyConfig",
    "PolicyError",
    "RESERVED_NAMES",
    "RunResult",
    "SandboxConfig",
    "SandboxHit",
    "TokenCounter",
    "api_reference",
    "api_signatures",
    "build_api",
    "compile_program",
    "compile_skill",
    "cut_json",
    "json_extent",
    "run_program",
    "validate_source",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first use, and keep the value."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    return value
