"""The Docker image built for real and driven through one MCP session with no network (scripts/image-smoke.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _engine_available() -> bool:
    if shutil.which("docker"):
        if subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=60).returncode == 0:
            return True
    return shutil.which("podman") is not None and os.geteuid() == 0


@pytest.mark.slow
@pytest.mark.timeout(5400)
@pytest.mark.skipif(not _engine_available(), reason="needs a Docker engine, or podman run as root")
def test_image_builds_and_serves_a_session_offline_without_torch() -> None:
    """The image builds, stays under 800 MB, and serves one MCP session (index built inside, search, programs,
    state, a skill) with no network, as its own user."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "image-smoke.sh")], cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=5400, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["checks_passed"] == summary["checks"] >= 8, summary
    assert summary["image_mb"] < 800, summary
