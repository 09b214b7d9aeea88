"""Shared benchmark plumbing: paths, machine facts, the JSON result line, cached index builds."""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"
DATASETS = REPO.parent / "shared" / "datasets"
SCIFACT = DATASETS / "scifact"

if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def emit(bench: str, config: dict, metrics: dict) -> dict:
    """Print one JSON result line {bench, config, metrics, machine, git_sha} to stdout and return it."""
    line = {"bench": bench, "config": config, "metrics": metrics, "machine": machine(), "git_sha": git_sha()}
    print(json.dumps(line), flush=True)
    return line


def with_goals(metrics: dict, goals: Mapping[str, tuple[float, str, float]]) -> dict:
    """`metrics` plus one entry per stated goal and their conjunction: metrics["goals"][name] =
    {"value", "goal", "goal_met"} and metrics["goal_met"]. goals: {name: (value, "<=" | "<" | ">=" | ">" | "==", bound)}."""
    checks = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
    entries = {
        name: {"value": value, "goal": f"{op} {bound}", "goal_met": bool(checks[op](value, bound))}
        for name, (value, op, bound) in goals.items()
    }
    return {**metrics, "goals": entries, "goal_met": all(entry["goal_met"] for entry in entries.values())}


def build_cached_index(name: str, sources: list[Path], **config_fields) -> Path:
    """Build (or incrementally refresh) an index under benchmarks/.cache/<name>; returns its directory."""
    from index import IndexConfig, build_index

    out = CACHE / name
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config_fields.setdefault("model_cache_dir", CACHE / "models")
    report = build_index([Path(s) for s in sources], out, IndexConfig(show_progress=True, **config_fields))
    print(f"[bench] index {name}: {report} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return out
