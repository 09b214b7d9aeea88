"""Saved skills: small functions an agent stores once and any later program may call by name.

Skills belong to the state dir: every client of every server on one state dir shares them. What
makes that safe (see `sandbox.compile_skill` and the sandbox runner):
- a skill is one `def name(...)` (and a docstring); nothing runs when it is defined, and no name it
  binds anywhere can be an API name, builtin or module, so it can never stand in for `search`;
- a program receives only the skills it names (its compiled global names, then theirs), each
  defined on its first call in globals of its own: a program that calls no skill runs exactly as
  if none existed, and a broken one fails only the programs that call it, with an error naming it;
- the compiled size is capped per skill and in total, so skills can never push a request over the
  fork server's frame cap.

Contract: a skill lives in `skills_dir` as `<name>.py` (its source) plus `<name>.json`
(`{name, description, sha256, saved_at}`), both written atomically (temp file, then `os.replace`).
It is validated when saved and again whenever its file is (re)read: at start, and when a program
names a skill whose file changed on disk (another server saved it). A file that no longer passes is
never run: a program calling it gets a `RuntimeError` that names the skill and the reason.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import RESERVED_NAMES, CompiledProgram, PolicyError, SandboxConfig, compile_skill

from .errors import SkillError

__all__ = ["MAX_DESCRIPTION_CHARS", "Skill", "SkillStore"]

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_DESCRIPTION_CHARS = 1000
MAX_SKILLS = 200
# Compiled (marshalled) sizes: a 100 KB source of ordinary code compiles to about 300 KB, but
# constant folding can turn 50 KB into 8 MB. The total keeps every request far below the fork
# server's 64 MiB frame (base64 adds a third).
MAX_COMPILED_BYTES = 1 << 20
MAX_TOTAL_COMPILED_BYTES = 8 << 20
_MAX_REASON_CHARS = 400

logger = logging.getLogger(__name__)

_FileKey = tuple[int, int, int, int]  # the source's (mtime_ns, size, inode) and the metadata's mtime_ns


@dataclass(frozen=True, slots=True)
class Skill:
    """One validated skill, or (``broken`` set) a file that cannot be loaded, standing in as a stub
    that raises an error naming the skill, so only programs calling it fail."""

    name: str
    description: str
    source: str
    program: CompiledProgram
    wire: bytes  # program.to_bytes(), made once
    names: frozenset[str]  # global names its code may look up (the skills it may call among them)
    key: _FileKey | None = None
    broken: str | None = None

    def info(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description}

    def entry(self) -> dict[str, Any]:
        """The skill as an `ExecRequest.skills` item."""
        return {"name": self.name, "description": self.description, "program": self.wire}


class SkillStore:
    """Skills on disk plus a validated in-memory copy; safe to use from several threads."""

    def __init__(self, skills_dir: Path, sandbox_config: SandboxConfig) -> None:
        self.skills_dir = skills_dir
        self._config = sandbox_config
        self._lock = threading.Lock()
        self._skills: dict[str, Skill] = {}  # valid and broken ones
        self._listing: tuple[tuple[int, int, int], list[str]] | None = None  # directory key, names

    # -------------------------------------------------------------- reading

    def load(self) -> list[Skill]:
        """(Re)load every skill from disk, validating each again; returns the valid ones."""
        with self._lock:
            self._skills = {}
        for name in self._names_on_disk():
            self._current(name)
        return self.skills()

    def skills(self) -> list[Skill]:
        """The valid skills, by name."""
        with self._lock:
            return [self._skills[name] for name in sorted(self._skills) if self._skills[name].broken is None]

    def infos(self) -> list[dict[str, str]]:
        return [skill.info() for skill in self.skills()]

    def get(self, name: str) -> Skill | None:
        with self._lock:
            skill = self._skills.get(name)
        return skill if skill is not None and skill.broken is None else None

    def for_program(self, program: CompiledProgram) -> tuple[list[dict[str, Any]], list[str]]:
        """The `ExecRequest.skills` entries of `program`, and the names of the skills it may call.

        Only skills the program names are sent (then the skills those name, and so on); a program
        naming `list_skills` also gets a listing-only entry (no program) for every other skill.
        Files changed on disk since they were read (another server saved them) are read again.
        """
        called: dict[str, Skill] = {}
        on_disk = set(self._names_on_disk())
        pending = [name for name in program.global_names() if name in on_disk]
        while pending:
            name = pending.pop()
            if name in called:
                continue
            skill = self._current(name)
            if skill is not None:
                called[name] = skill
                pending.extend(n for n in skill.names if n in on_disk and n not in called)
        entries = {name: skill.entry() for name, skill in called.items()}
        if "list_skills" in program.global_names():
            for name in self._names_on_disk():
                listed = entries.get(name) or self._current(name)
                if listed is not None and name not in entries:
                    entries[name] = {**listed.entry(), "program": b""}
        return [entries[name] for name in sorted(entries)], sorted(called)

    def _names_on_disk(self) -> list[str]:
        """Skill names in the directory; the listing is reused while the directory is unchanged (one stat)."""
        try:
            stat = self.skills_dir.stat()
        except OSError:
            return []
        key = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        with self._lock:
            cached = self._listing
        # A directory changed within the last second may change again within its timestamp's granularity.
        if cached is not None and cached[0] == key and time.time_ns() - stat.st_mtime_ns > 1_000_000_000:
            return cached[1]
        try:
            names = sorted(entry.name[:-3] for entry in os.scandir(self.skills_dir)
                           if entry.name.endswith(".py") and NAME_PATTERN.match(entry.name[:-3]))
        except OSError:
            return []
        with self._lock:
            self._listing = (key, names)
        return names

    def _current(self, name: str) -> Skill | None:
        """The skill `name` as its file is now: cached while the file is unchanged, else read again."""
        if not _may_be_skill(name):  # an API name, builtin or module is never a skill, whatever the disk holds
            return None
        source_path = self.skills_dir / f"{name}.py"
        try:
            stat = source_path.stat()
            meta_mtime = _mtime(source_path.with_suffix(".json"))
        except OSError:  # no such skill (any more)
            with self._lock:
                self._skills.pop(name, None)
            return None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino, meta_mtime)
        with self._lock:
            cached = self._skills.get(name)
        if cached is not None and cached.key == key:
            return cached
        try:
            skill = self._read(name, source_path, key)
        except (OSError, UnicodeDecodeError, ValueError, SkillError, PolicyError) as exc:
            reason = exc.describe() if isinstance(exc, PolicyError) else (
                "its file cannot be read" if isinstance(exc, OSError) else str(exc))
            logger.warning("skill %s cannot be loaded: %s", name, " ".join(reason.split()))
            skill = self._broken(name, reason, key)
        with self._lock:
            self._skills[name] = skill
        return skill

    def _read(self, name: str, source_path: Path, key: _FileKey) -> Skill:
        source = source_path.read_text(encoding="utf-8")
        meta_path = source_path.with_suffix(".json")
        description = ""
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            description = str(meta.get("description", ""))[:MAX_DESCRIPTION_CHARS]
            if meta.get("sha256") and meta["sha256"] != _sha256(source):
                raise SkillError(f"{source_path.name} changed on disk since it was saved (sha256 mismatch)")
        skill = self._compile(name, source, description, key)
        with self._lock:
            others = sum(len(s.wire) for n, s in self._skills.items() if n != name and s.broken is None)
        if others + len(skill.wire) > MAX_TOTAL_COMPILED_BYTES:
            raise SkillError(f"the skills together would compile to more than {MAX_TOTAL_COMPILED_BYTES} bytes")
        return skill

    def _compile(self, name: str, source: str, description: str, key: _FileKey | None) -> Skill:
        program = compile_skill(name, source, self._config, reserved_names=RESERVED_NAMES)
        wire = program.to_bytes()
        if len(wire) > MAX_COMPILED_BYTES:
            raise SkillError(f"skill {name!r} compiles to {len(wire)} bytes; the limit is {MAX_COMPILED_BYTES} "
                             "(large literals count after constant folding): move data out of the code")
        return Skill(name=name, description=description, source=source, program=program, wire=wire,
                     names=program.global_names(), key=key)

    def _broken(self, name: str, reason: str, key: _FileKey) -> Skill:
        """A stub that raises, naming the skill and the reason, for programs that call it."""
        if len(reason) > _MAX_REASON_CHARS:
            reason = reason[:_MAX_REASON_CHARS] + "…"
        message = f"skill {name!r} cannot be loaded: {reason}. Save it again with save_skill or delete it."
        source = f"def {name}(*args, **kwargs):\n    raise RuntimeError({message!r})\n"
        program = compile_skill(name, source, self._config, reserved_names=RESERVED_NAMES)
        return Skill(name=name, description=f"(cannot be loaded: {reason})", source=source, program=program,
                     wire=program.to_bytes(), names=frozenset(), key=key, broken=reason)

    # -------------------------------------------------------------- writing

    def save(self, name: str, source: str, description: str) -> Skill:
        """Validate and store a skill (replacing one of the same name). Raises `SkillError`."""
        _check_name(name)
        if not isinstance(description, str) or not description.strip():
            raise SkillError("description is empty: say in one sentence what the skill returns")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise SkillError(f"description has {len(description)} characters; keep it under {MAX_DESCRIPTION_CHARS}")
        if not isinstance(source, str) or not source.strip():
            raise SkillError(f"source is empty: pass the code of one function `def {name}(...)`")
        try:
            skill = self._compile(name, source, description.strip(), None)
        except PolicyError as exc:
            raise SkillError(f"skill {name!r} refused: {exc.describe()}") from exc
        with self._lock:
            valid = {n: s for n, s in self._skills.items() if s.broken is None and n != name}
            if len(valid) >= MAX_SKILLS:
                raise SkillError(f"there are already {MAX_SKILLS} skills; delete one with delete_skill first")
            total = sum(len(s.wire) for s in valid.values()) + len(skill.wire)
            if total > MAX_TOTAL_COMPILED_BYTES:
                raise SkillError(f"the skills together would compile to {total} bytes; the limit is "
                                 f"{MAX_TOTAL_COMPILED_BYTES}: delete skills you no longer need")
            self.skills_dir.mkdir(parents=True, exist_ok=True)
            meta = {"name": name, "description": skill.description, "sha256": _sha256(source), "saved_at": time.time()}
            source_path = self.skills_dir / f"{name}.py"
            _write_atomic(source_path, source)
            _write_atomic(source_path.with_suffix(".json"), json.dumps(meta, ensure_ascii=False, indent=2))
            try:
                stat = source_path.stat()
                key: _FileKey | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino,
                                        _mtime(source_path.with_suffix(".json")))
            except OSError:
                key = None
            skill = Skill(name=name, description=skill.description, source=source, program=skill.program,
                          wire=skill.wire, names=skill.names, key=key)
            self._skills[name] = skill
        return skill

    def delete(self, name: str) -> None:
        """Remove a skill; `SkillError` when there is none of that name."""
        _check_name(name)
        with self._lock:
            source_path = self.skills_dir / f"{name}.py"
            if name not in self._skills and not source_path.exists():
                known = ", ".join(n for n in sorted(self._skills) if self._skills[n].broken is None) or "none"
                raise SkillError(f"no skill named {name!r} (saved skills: {known})")
            for path in (source_path, source_path.with_suffix(".json")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            self._skills.pop(name, None)


def called_skills_hint(hint: object, names: Iterable[str]) -> str | None:
    """The hint of a timeout/memory/crash outcome, naming the skills the program could call."""
    called = ", ".join(names)
    if not called:
        return hint if isinstance(hint, str) else None
    note = f"the program called the skill(s) {called}; a skill may be what ran out"
    return f"{hint} ({note})" if isinstance(hint, str) and hint else note


def _may_be_skill(name: str) -> bool:
    return bool(NAME_PATTERN.match(name)) and name not in RESERVED_NAMES and not keyword.iskeyword(name)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise SkillError(
            f"invalid skill name {name!r}: use a Python identifier of 1-64 characters that starts with a letter"
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
