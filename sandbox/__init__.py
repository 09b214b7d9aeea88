"""The sandbox: validate agent programs in the server, run them in a locked-down forked child."""

from sandbox.api import API_NAMES, RESERVED_NAMES, SandboxAPI, SandboxHit, build_api, preload_sandbox
from sandbox.config import POLICY_MODES, PolicyConfig, SandboxConfig
from sandbox.errors import BusyError, ForkServerError, PolicyError, SandboxError, Violation
from sandbox.jsonfit import CUT_MARK, DEPTH_MARK, MAX_JSON_DEPTH, cut_json, json_extent, safe_text
from sandbox.forkserver_client import ForkServerClient
from sandbox.modules import ALLOWED_MODULES, preload_modules
from sandbox.policy import CompiledProgram, compile_program, compile_skill
from sandbox.protocol import OUTCOMES, TIMING_KEYS, ExecRequest, ExecutionResult, ProtocolError, Ready, Stats
from sandbox.runner import RunResult, run_program
from sandbox.tokens import TokenCounter
from sandbox.validate import validate_source

__all__ = [
    "ALLOWED_MODULES",
    "API_NAMES",
    "CUT_MARK",
    "DEPTH_MARK",
    "MAX_JSON_DEPTH",
    "OUTCOMES",
    "TIMING_KEYS",
    "POLICY_MODES",
    "BusyError",
    "CompiledProgram",
    "ExecRequest",
    "ExecutionResult",
    "ForkServerClient",
    "ForkServerError",
    "PolicyConfig",
    "PolicyError",
    "RESERVED_NAMES",
    "ProtocolError",
    "Ready",
    "RunResult",
    "SandboxAPI",
    "SandboxConfig",
    "SandboxError",
    "SandboxHit",
    "Stats",
    "TokenCounter",
    "Violation",
    "build_api",
    "compile_program",
    "compile_skill",
    "cut_json",
    "json_extent",
    "preload_modules",
    "preload_sandbox",
    "run_program",
    "safe_text",
    "validate_source",
]
