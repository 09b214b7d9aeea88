"""Errors raised by the sandbox package.

Tree::

    SandboxError                 root; exit_code 1 (internal)
    ├── PolicyError(violations)  the program was refused before running; exit_code 2
    ├── ForkServerError          the fork server could not start, died or broke the protocol
    └── BusyError                every worker is busy and the queue is full (outcome ``busy``)

Exceptions raised *by user code* are never our errors: they come back as data inside a
``RunResult`` (outcome ``runtime_error``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BusyError", "ForkServerError", "PolicyError", "SandboxError", "Violation"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: which rule, where (1-based line, 0-based column), why, and what to do instead."""

    rule: str
    line: int
    col: int
    message: str
    hint: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        return f"line {self.line}, col {self.col}: [{self.rule}] {self.message}. Hint: {self.hint}"


class SandboxError(Exception):
    """Root of every error the sandbox package raises."""

    exit_code = 1


class PolicyError(SandboxError):
    """The program broke one or more rules; ``violations`` holds all of them, in source order."""

    exit_code = 2

    def __init__(self, violations: tuple[Violation, ...] | list[Violation]) -> None:
        self.violations: tuple[Violation, ...] = tuple(violations)
        if not self.violations:
            raise ValueError("PolicyError needs at least one violation")
        first = self.violations[0]
        more = len(self.violations) - 1
        suffix = f" (+{more} more violation{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{first}{suffix}")

    @property
    def rule(self) -> str:
        """The first violation's rule (the one an agent should fix first)."""
        return self.violations[0].rule

    @property
    def line(self) -> int:
        return self.violations[0].line

    @property
    def hint(self) -> str:
        return self.violations[0].hint

    def describe(self) -> str:
        """All violations, one per line (for the ``validation_error`` message)."""
        return "\n".join(str(v) for v in self.violations)


class ForkServerError(SandboxError):
    """The fork server failed to start, died, or sent something outside the protocol."""


class BusyError(SandboxError):
    """All workers are busy and the wait queue is full; the caller should retry later."""
