"""Facts both sides of the fork-server socket share: platform check, environment, timeouts, incidents.

Contract: imported by the fork server (``forkserver.py``, ``forkserver_startup.py``) and by its
client (``forkserver_client.py``); it imports nothing of either, so neither reaches into the other.
"""

from __future__ import annotations

import logging
import platform
import uuid

__all__ = [
    "CLOSE_TIMEOUT_S",
    "IS_LINUX",
    "NOT_LINUX_MESSAGE",
    "OFFLINE_ENV",
    "SINGLE_THREAD_ENV",
    "START_TIMEOUT_S",
    "incident",
]

log = logging.getLogger("sandbox.forkserver")

IS_LINUX = platform.system() == "Linux"
NOT_LINUX_MESSAGE = (
    "execute_code needs Linux (seccomp, Landlock, rlimits); this platform is "
    f"{platform.system() or 'unknown'}. Run the knowledge-mcp Docker image instead."
)
# Thread pools of the math libraries stay at one thread in the fork server (fork after threads is UB).
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAYON_NUM_THREADS": "1",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
START_TIMEOUT_S = 300.0  # the client's wait for Ready (loading the index and models)
CLOSE_TIMEOUT_S = 10.0  # the client's wait for the fork server to exit after EOF


def incident(message: str, *args: object, logger: logging.Logger = log) -> str:
    """Log ``message % args`` under a fresh incident id on stderr; return the wire text naming only the id."""
    incident_id = uuid.uuid4().hex[:12]
    logger.error("internal error %s: " + message, incident_id, *args)
    return f"internal error {incident_id}"
