"""The sandbox: validate agent programs in the server, run them in a locked-down forked child."""

from sandbox.api import (
    API_NAMES,
    RESERVED_NAMES,
    SandboxHit,
    api_reference,
    api_signatures,
    build_api,
)
from sandbox.config import DEFAULT_STATE_MAX_BYTES, MAX_TIMEOUT_S, PolicyConfig, SandboxConfig
from sandbox.errors import BusyError, ForkServerError, PolicyError
from sandbox.jsonfit import CUT_MARK, DEPTH_MARK, MAX_JSON_DEPTH, cut_json, json_extent
from sandbox.forkserver_client import ForkServerClient
from sandbox.policy import CompiledProgram, compile_program, compile_skill
from sandbox.protocol import OUTCOMES, TIMING_KEYS, ExecRequest
from sandbox.runner import RunResult, run_program
from sandbox.tokens import TokenCounter
from sandbox.validate import validate_source

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
