"""Saved skills: small functions an agent stores once and calls from every later program.

Contract: a skill lives in `skills_dir` as `<name>.py` (its source) plus `<name>.json`
(`{name, description, sha256, saved_at}`), both written atomically (temp file, then `os.replace`).
It is validated by `sandbox.compile_skill` when saved (exactly one function named like the skill,
no shadowing of an API name or builtin, the usual program policy) and again when loaded; a file
that no longer passes is skipped with a warning, never run. Skills survive a restart.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import RESERVED_NAMES, CompiledProgram, PolicyError, SandboxConfig, compile_skill

from .errors import SkillError

__all__ = ["MAX_DESCRIPTION_CHARS", "Skill", "SkillStore"]

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_DESCRIPTION_CHARS = 1000
MAX_SKILLS = 200

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Skill:
    """One validated skill: its compiled program travels to every child with each request."""

    name: str
    description: str
    source: str
    program: CompiledProgram

    def info(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description}


class SkillStore:
    """Skills on disk plus a validated in-memory copy; safe to use from several threads."""

    def __init__(self, skills_dir: Path, sandbox_config: SandboxConfig) -> None:
        self.skills_dir = skills_dir
        self._config = sandbox_config
        self._lock = threading.Lock()
        self._skills: dict[str, Skill] = {}

    # -------------------------------------------------------------- reading

    def load(self) -> list[Skill]:
        """(Re)load every skill from disk, validating each again; returns the valid ones by name."""
        skills: dict[str, Skill] = {}
        if self.skills_dir.is_dir():
            for source_path in sorted(self.skills_dir.glob("*.py")):
                name = source_path.stem
                try:
                    skills[name] = self._load_one(name, source_path)
                except (OSError, UnicodeDecodeError, ValueError, SkillError, PolicyError) as exc:
                    logger.warning("skipping skill %s: %s", source_path, " ".join(str(exc).split()))
        with self._lock:
            self._skills = skills
        return list(skills.values())

    def _load_one(self, name: str, source_path: Path) -> Skill:
        if not NAME_PATTERN.match(name):
            raise SkillError(f"file name {source_path.name!r} is not a valid skill name")
        source = source_path.read_text(encoding="utf-8")
        meta_path = source_path.with_suffix(".json")
        description = ""
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            description = str(meta.get("description", ""))
            if meta.get("sha256") and meta["sha256"] != _sha256(source):
                raise SkillError(f"{source_path.name} changed on disk since it was saved (sha256 mismatch)")
        program = compile_skill(name, source, self._config, reserved_names=RESERVED_NAMES)
        return Skill(name=name, description=description, source=source, program=program)

    def skills(self) -> list[Skill]:
        with self._lock:
            return [self._skills[name] for name in sorted(self._skills)]

    def infos(self) -> list[dict[str, str]]:
        return [skill.info() for skill in self.skills()]

    def get(self, name: str) -> Skill | None:
        with self._lock:
            return self._skills.get(name)

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
            program = compile_skill(name, source, self._config, reserved_names=RESERVED_NAMES)
        except PolicyError as exc:
            raise SkillError(f"skill {name!r} refused: {exc.describe()}") from exc
        with self._lock:
            if name not in self._skills and len(self._skills) >= MAX_SKILLS:
                raise SkillError(f"there are already {MAX_SKILLS} skills; delete one with delete_skill first")
            self.skills_dir.mkdir(parents=True, exist_ok=True)
            meta = {"name": name, "description": description.strip(), "sha256": _sha256(source), "saved_at": time.time()}
            _write_atomic(self.skills_dir / f"{name}.py", source)
            _write_atomic(self.skills_dir / f"{name}.json", json.dumps(meta, ensure_ascii=False, indent=2))
            skill = Skill(name=name, description=meta["description"], source=source, program=program)
            self._skills[name] = skill
        return skill

    def delete(self, name: str) -> None:
        """Remove a skill; `SkillError` when there is none of that name."""
        _check_name(name)
        with self._lock:
            source_path = self.skills_dir / f"{name}.py"
            if name not in self._skills and not source_path.exists():
                known = ", ".join(sorted(self._skills)) or "none"
                raise SkillError(f"no skill named {name!r} (saved skills: {known})")
            for path in (source_path, source_path.with_suffix(".json")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            self._skills.pop(name, None)


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
