"""Run one compiled program in the (already locked-down) child and describe what happened.

Contract: ``run_program`` never raises for anything user code does — exceptions, bad results and
oversized state all come back inside a ``RunResult``. It returns outcome "memory_limit" for a
MemoryError raised by the program; a MemoryError while building the result escapes to the worker,
which reports memory_limit too. Tracebacks show only the program's and skills' own frames (their
pseudo file names), never our frames or host paths.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from sandbox.config import DEFAULT_STATE_MAX_BYTES
from sandbox.guards import SAFE_BUILTIN_NAMES, OutputBuffer, build_globals
from sandbox.jsonfit import MAX_JSON_DEPTH, cut_json, safe_text, shrink_json
from sandbox.modules import ALLOWED_MODULES, json_default
from sandbox.policy import CompiledProgram, skill_name
from sandbox.validate import REFUSED_BUILTINS

__all__ = ["RUN_OUTCOMES", "RunResult", "run_program"]

logger = logging.getLogger(__name__)

# The outcomes a run can end with inside the child (a subset of protocol.OUTCOMES: the others are
# decided outside the run: by validation, the fork server, or the deadline).
RUN_OUTCOMES = frozenset({"ok", "runtime_error", "memory_limit"})
_MAX_MESSAGE_CHARS = 2000
_MAX_TRACEBACK_FRAMES = 12


class NamespaceProvider(Protocol):
    """What ``run_program`` needs of the API: ``api.SandboxAPI`` is one."""

    def namespace(self) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one program run produced (JSON-safe through ``to_dict``)."""

    outcome: str
    stdout: str = ""
    result: object = None
    error: dict[str, object] | None = None
    truncated: bool = False
    state_set: dict[str, object] = field(default_factory=dict)
    state_deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.outcome not in RUN_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(RUN_OUTCOMES)}, got {self.outcome!r}")

    def to_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome, "stdout": self.stdout, "result": self.result, "error": self.error,
                "truncated": self.truncated, "state_set": dict(self.state_set),
                "state_deleted": list(self.state_deleted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> RunResult:
        return cls(outcome=str(data["outcome"]), stdout=str(data.get("stdout", "")), result=data.get("result"),
                   error=data.get("error"), truncated=bool(data.get("truncated", False)),  # type: ignore[arg-type]
                   state_set=dict(data.get("state_set") or {}),  # type: ignore[call-overload]
                   state_deleted=list(data.get("state_deleted") or []))  # type: ignore[call-overload]


def run_program(
    program: CompiledProgram,
    api: NamespaceProvider | Mapping[str, object],
    *,
    state: Mapping[str, object],
    skills: Sequence[CompiledProgram] = (),
    stdout_cap_bytes: int,
    state_max_bytes: int = DEFAULT_STATE_MAX_BYTES,
    result_cap_bytes: int | None = None,
) -> RunResult:
    """Execute ``program`` with the API as globals; see the module contract.

    ``state`` is the session's state (a JSON object); the program gets a private copy and the
    result lists the keys it set or deleted. ``result_cap_bytes`` (default: ``stdout_cap_bytes``)
    bounds the JSON of ``result``; a larger one is cut and marked ``truncated``. Every text that
    leaves (stdout, error, result, state) is valid UTF-8: lone surrogates become ``\\udcxx``.
    """
    run = _run(program, api, state=state, skills=skills, stdout_cap_bytes=stdout_cap_bytes,
               state_max_bytes=state_max_bytes, result_cap_bytes=result_cap_bytes)
    return RunResult(
        run.outcome, stdout=safe_text(run.stdout), result=run.result, truncated=run.truncated,
        error={key: safe_text(value) if isinstance(value, str) else value for key, value in run.error.items()}
        if run.error is not None else None,
        state_set={safe_text(key): cut_json(value)[0] for key, value in run.state_set.items()},  # escapes only
        state_deleted=[safe_text(key) for key in run.state_deleted],
    )


def _run(
    program: CompiledProgram,
    api: NamespaceProvider | Mapping[str, object],
    *,
    state: Mapping[str, object],
    skills: Sequence[CompiledProgram],
    stdout_cap_bytes: int,
    state_max_bytes: int,
    result_cap_bytes: int | None,
) -> RunResult:
    namespace = dict(api if isinstance(api, Mapping) else api.namespace())
    initial_json = {key: json.dumps(value) for key, value in _copy_state(state).items()}
    working_state = {key: json.loads(text) for key, text in initial_json.items()}
    namespace["state"] = working_state
    output = OutputBuffer(stdout_cap_bytes)
    namespace.update(_lazy_skills(skills, namespace, output))
    scope = build_globals(namespace, program.mode, output)
    sources = {program.filename: program.source.splitlines()}
    sources.update({skill.filename: skill.source.splitlines() for skill in skills})

    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):  # type: ignore[type-var]
            exec(program.code, scope)  # noqa: S102 - compiled by policy.compile_program
    except MemoryError:
        return RunResult("memory_limit", stdout=output.getvalue(), truncated=output.truncated,
                         error=_error_dict("MemoryError", "the program ran out of memory (the memory limit was reached)",
                                           None, "Process less data at once: smaller k, slices, generators.", ""))
    except BaseException as exc:  # noqa: BLE001 - anything user code raises is a result
        return RunResult("runtime_error", stdout=output.getvalue(), truncated=output.truncated,
                         error=_describe_hostile_exception(exc, sources))

    stdout, truncated = output.getvalue(), output.truncated
    cap = stdout_cap_bytes if result_cap_bytes is None else result_cap_bytes
    try:
        result_text, result_cut = shrink_json(
            scope.get("result"), lambda text: len(text.encode("utf-8")) <= cap, default=json_default, budget_chars=cap
        )
    except (TypeError, ValueError, RecursionError) as exc:
        return RunResult("runtime_error", stdout=stdout, truncated=truncated, error=_error_dict(
            type(exc).__name__, f"result is not JSON-serialisable: {_message(exc)}", None,
            "Set result to dicts, lists, strings, numbers, booleans or None (hits are fine); "
            "NaN and infinity are not JSON.", ""))
    final_state = scope.get("state")
    if not isinstance(final_state, dict):
        return RunResult("runtime_error", stdout=stdout, truncated=truncated, error=_error_dict(
            "TypeError", f"state must stay a dict, but the program set it to a {type(final_state).__name__}", None,
            "Change keys of state (state['key'] = value) instead of rebinding it.", ""))
    try:
        state_set, state_deleted = _state_changes(initial_json, final_state, state_max_bytes)
    except (TypeError, ValueError, RecursionError) as exc:
        return RunResult("runtime_error", stdout=stdout, truncated=truncated, error=_error_dict(
            type(exc).__name__, _message(exc), None,
            "Keep state small and JSON-only: str keys; dict, list, str, number, bool or None values.", ""))
    return RunResult("ok", stdout=stdout, result=json.loads(result_text), truncated=truncated or result_cut,
                     state_set=state_set, state_deleted=state_deleted)


def _lazy_skills(
    skills: Sequence[CompiledProgram], namespace: Mapping[str, object], output: OutputBuffer
) -> dict[str, Callable[..., object]]:
    """One stand-in per skill, by name: the skill is defined on its first call, in globals of its own.

    Its own globals (the API, ``state``, the other skills) mean nothing a skill does can rebind a
    name of the program, and nothing the program rebinds changes what a skill calls. A skill that
    fails to load fails only the call, with an error naming it. No API name, builtin or module is
    ever replaced by a skill (``compile_skill`` refuses those names too).
    """
    stand_ins: dict[str, Callable[..., object]] = {}
    for skill in skills:
        name = skill_name(skill.filename)
        if name is None or name in namespace or name in stand_ins or name in SAFE_BUILTIN_NAMES \
                or name in REFUSED_BUILTINS or name in ALLOWED_MODULES:
            continue  # never in place of the API, a builtin or a module (compile_skill refuses those names too)
        stand_ins[name] = _lazy_skill(name, skill, namespace, stand_ins, output)
    return stand_ins


def _lazy_skill(
    name: str, skill: CompiledProgram, namespace: Mapping[str, object],
    stand_ins: Mapping[str, Callable[..., object]], output: OutputBuffer,
) -> Callable[..., object]:
    loaded: list[Callable[..., object]] = []

    def call(*args: object, **kwargs: object) -> object:
        if not loaded:
            scope = build_globals({**namespace, **stand_ins}, skill.mode, output)
            try:
                exec(skill.code, scope)  # noqa: S102 - compiled by policy.compile_skill: one def, nothing runs
            except MemoryError:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported as this skill's failure
                raise RuntimeError(f"skill {name!r} failed to load ({type(exc).__name__}: {_message(exc)}); "
                                   f"fix it with save_skill or remove it with delete_skill") from None
            function = scope.get(name)
            if not callable(function):
                raise RuntimeError(f"skill {name!r} does not define a function {name}()")
            loaded.append(function)
        return loaded[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _copy_state(state: Mapping[str, object]) -> dict[str, object]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    for key in state:
        if not isinstance(key, str):
            raise TypeError(f"state keys must be strings, got {key!r}")
    return dict(state)


def _state_changes(
    initial_json: Mapping[str, str], final_state: Mapping[object, object], max_bytes: int
) -> tuple[dict[str, object], list[str]]:
    """Keys set (new or changed JSON) and deleted; refuses non-JSON values and a state over ``max_bytes``."""
    state_set: dict[str, object] = {}
    total = 2  # the braces
    for key, value in final_state.items():
        if not isinstance(key, str):
            raise TypeError(f"state keys must be strings, got {type(key).__name__} {key!r}")
        if _nesting_exceeds(value, MAX_JSON_DEPTH):
            raise ValueError(f"state[{key!r}] nests deeper than {MAX_JSON_DEPTH} levels; flatten it")
        try:
            text = json.dumps(value, default=json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state[{key!r}] is not JSON-serialisable: {exc}") from None
        total += len(json.dumps(key).encode("utf-8")) + len(text.encode("utf-8")) + 2
        if initial_json.get(key) != text:
            state_set[key] = json.loads(text)
    if total > max_bytes:
        raise ValueError(f"state would be {total} bytes of JSON; the limit is {max_bytes} bytes")
    state_deleted = sorted(key for key in initial_json if key not in final_state)
    return state_set, state_deleted


def _nesting_exceeds(value: object, limit: int) -> bool:
    """True when lists/dicts/tuples in ``value`` nest deeper than ``limit`` (iterative: any depth)."""
    stack = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            if depth >= limit:
                return True
            seen += 1
            if seen > 1_000_000:  # a cycle or a huge value: json.dumps refuses or caps it below
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a message that cannot even be rendered
        text = ""
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "…"


def _error_dict(exception: str, message: str, line: int | None, hint: str | None, traceback: str) -> dict[str, object]:
    return {"exception": exception, "message": message, "line": line, "hint": hint, "traceback": traceback}


def _user_frames(tb: TracebackType | None, sources: Mapping[str, list[str]]) -> list[tuple[str, int, str, str]]:
    """(filename, line, function, source line) of the program's own frames, outermost first."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in sources:
            lines = sources[code.co_filename]
            line = tb.tb_lineno
            text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            frames.append((code.co_filename, line, code.co_name, text))
        tb = tb.tb_next
    return frames


def _collapse_repeats(frames: list[tuple[str, int, str, str]]) -> list[tuple[str, int, str, str] | str]:
    """Runs of one identical frame beyond three become a "[Previous line repeated N more times]" note."""
    collapsed: list[tuple[str, int, str, str] | str] = []
    run = 0
    for position, frame in enumerate(frames):
        run = run + 1 if position and frame == frames[position - 1] else 1
        if run <= 3:
            collapsed.append(frame)
        is_last_of_run = position + 1 == len(frames) or frames[position + 1] != frame
        if is_last_of_run and run > 3:
            collapsed.append(f"  [Previous line repeated {run - 3} more times]")
    return collapsed


def _format_traceback(frames: list[tuple[str, int, str, str]], exception: str, message: str) -> str:
    shown = _collapse_repeats(frames)
    if len(shown) > _MAX_TRACEBACK_FRAMES:
        keep_head, keep_tail = 3, _MAX_TRACEBACK_FRAMES - 3
        omitted = len(shown) - keep_head - keep_tail
        shown = [*shown[:keep_head], f"  [... {omitted} more frames ...]", *shown[-keep_tail:]]
    lines = ["Traceback (most recent call last):"]
    for frame in shown:
        if isinstance(frame, str):
            lines.append(frame)
            continue
        filename, line, function, text = frame
        lines.append(f'  File "{filename}", line {line}, in {function}')
        if text:
            lines.append(f"    {text}")
    lines.append(f"{exception}: {message}" if message else exception)
    return "\n".join(lines)


def _describe_hostile_exception(exc: BaseException, sources: Mapping[str, list[str]]) -> dict[str, object]:
    """``_describe_exception``, or a plain description when the program's exception fights back
    (attributes of odd types, a message that cannot be rendered): always a runtime_error."""
    try:
        return _describe_exception(exc, sources)
    except Exception:  # noqa: BLE001 - program data must never become an internal error
        name = getattr(type(exc), "__name__", "Exception")
        return _error_dict(name if isinstance(name, str) else "Exception", "the exception could not be described",
                           None, None, "")


def _describe_exception(exc: BaseException, sources: Mapping[str, list[str]]) -> dict[str, object]:
    exception = type(exc).__name__
    message = _message(exc)
    frames = _user_frames(exc.__traceback__, sources)
    line = frames[-1][1] if frames else None
    return _error_dict(exception, message, line, _hint_for(exc, message), _format_traceback(frames, exception, message))


def _hint_for(exc: BaseException, message: str) -> str | None:
    if isinstance(exc, RecursionError):
        return "The recursion went too deep; use a loop or an explicit stack."
    if isinstance(exc, NameError):
        name = getattr(exc, "name", None)
        if isinstance(name, str) and name in REFUSED_BUILTINS:  # a program's NameError may carry anything
            return f"{name}() is not available in the sandbox: {REFUSED_BUILTINS[name]}."
        return "Use the API (help()), the builtins help() lists, allowed modules, or your own names."
    if isinstance(exc, ImportError):
        return f"Allowed modules: {', '.join(sorted(ALLOWED_MODULES))}."
    if "in the sandbox" in message:
        return "Private attributes, frames, modules and other internals are out of reach; see help()."
    if isinstance(exc, LookupError) and "files()" in message:
        return "List indexed paths with files(pattern)."
    return None
