"""The audit log: one JSON line per execution, on stderr and optionally appended to a file.

Contract: `AuditLog.record(**fields)` never raises for a file it cannot write (it warns once per
call on stderr) and never touches stdout; lines from concurrent threads never interleave.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("server.audit")


class AuditLog:
    """One JSON line per execution: on stderr via logging, and appended to a file if configured."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> None:
        line = json.dumps({"event": "execution", "ts": round(time.time(), 3), **fields}, separators=(",", ":"))
        audit_logger.info("%s", line)
        if self.path is None:
            return
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
        except OSError as exc:
            logger.warning("cannot append to the audit log %s: %s", self.path, exc.strerror)
