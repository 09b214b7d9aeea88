"""No call's bytes outlive it in the fork server: its memory and a fresh spare's hold no earlier marker.

The attack (issue 10, class 1): a child inherits the fork server's heap, so anything an earlier call
left there (its program, state, skills, or the stdout, result and state it returned) would be
readable by the next program through any memory-disclosure bug. The test sends markers through
every channel, then reads the fork server's whole writable memory (/proc/PID/mem, as root) and that
of a spare forked afterwards, looking for each marker raw, JSON-escaped and base64-encoded.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest

from sandbox import ExecRequest, PolicyConfig
from sandbox.policy import compile_program, compile_skill

from .conftest import SandboxHandle, child_pids_of, plain_config

pytestmark = [pytest.mark.linux_only, pytest.mark.slow]


def marker_forms(marker: str) -> dict[str, bytes]:
    """The byte strings that betray ``marker``: raw, JSON-escaped, and base64 at each of the 3 alignments."""
    raw = marker.encode("utf-8")
    forms = {"raw": raw, "json": json.dumps(marker).encode()[1:-1], "json-ascii": json.dumps(marker, ensure_ascii=True).encode()[1:-1]}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        forms[f"base64+{shift}"] = encoded[4 if shift else 0 : -4]  # drop the groups that mix in neighbours
    return forms


def scan_memory(pid: int, needles: dict[str, bytes]) -> dict[str, list[str]]:
    """Which needles occur in the readable private/anonymous mappings of ``pid`` (name -> where)."""
    found: dict[str, list[str]] = {}
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) >= 6 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            if len(fields) >= 6 and fields[5].startswith("/") and "w" not in fields[1]:
                continue  # read-only file mappings (code, model weights): never hold a request
            low, high = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(low)
                data = mem.read(high - low)
            except (OSError, ValueError, OverflowError):
                continue
            for name, needle in needles.items():
                if needle in data:
                    found.setdefault(name, []).append(fields[5] if len(fields) >= 6 else "anonymous")
    return found


@pytest.fixture(scope="module")
def sandbox(canary_env) -> SandboxHandle:
    handle = SandboxHandle(plain_config(policy=PolicyConfig(mode="full"), spare_children=1, max_workers=2))
    yield handle
    handle.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_no_request_or_result_bytes_stay_in_the_fork_server_or_reach_a_later_child(sandbox: SandboxHandle) -> None:
    """It sends markers in the program, state and a skill, and gets others back in stdout, result and
    state; afterwards neither the fork server nor a spare forked later holds any of them in any form."""
    token = uuid.uuid4().hex[:12]
    markers = {
        "program": f'prog"{token}\\secret',
        "state": f'state"{token}\\secret',
        "skill": f'skill"{token}\\secret',
        "stdout": f'out"{token}\\secret',
        "result": f'res"{token}\\secret',
        "state_set": f'set"{token}\\secret',
    }
    # Output markers are assembled at run time, so they never appear in the request itself.
    rev = {name: value[::-1] for name, value in markers.items()}
    source = (
        f"seen = {markers['program']!r}\n"
        f"print({rev['stdout']!r}[::-1])\n"
        f"result = {{'r': {rev['result']!r}[::-1], 'in': state['s'], 'skill': skill_marker()}}\n"
        f"state['out'] = {rev['state_set']!r}[::-1]\n"
    )
    skill = compile_skill("skill_marker", f"def skill_marker():\n    return {markers['skill']!r}\n", sandbox.config.policy)
    request = ExecRequest(
        request_id=f"mem-{token}", program=compile_program(source, sandbox.config.policy).to_bytes(), timeout_s=10.0,
        memory_mb=sandbox.config.memory_mb, output_cap_bytes=100_000, state={"s": markers["state"]},
        skills=[{"name": "skill_marker", "description": "returns a marker", "program": skill.to_bytes()}],
    )
    result = sandbox.loop.run_until_complete(sandbox.client.execute(request))
    assert result.outcome == "ok", result.error
    assert result.result == {"r": markers["result"], "in": markers["state"], "skill": markers["skill"]}
    assert markers["stdout"] in result.stdout and result.state_set == {"out": markers["state_set"]}
    for _ in range(3):  # later calls fork new spares from the same heap
        assert sandbox.run("result = 1").outcome == "ok"
    stats = sandbox.settle()
    spares = [pid for pid in child_pids_of(stats.pid) if pid not in stats.running_pids]
    assert spares, "no spare child to scan"
    needles = {f"{channel}/{form}": needle for channel, marker in markers.items()
               for form, needle in marker_forms(marker).items()}
    for pid, who in [(stats.pid, "fork server"), (spares[-1], "fresh spare child")]:
        found = scan_memory(pid, needles)
        assert found == {}, f"the {who} (pid {pid}) still holds bytes of an earlier call: {sorted(found)}"


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_memory_scan_finds_a_marker_the_process_holds(sandbox: SandboxHandle) -> None:
    """The scan is able to fail: a marker a child's program holds while it sleeps is found in that child."""
    token = uuid.uuid4().hex[:12]
    marker = f'live"{token}\\secret'
    request = sandbox.request(f"import time\nkeep = {marker[::-1]!r}[::-1]\ntime.sleep(3)\nresult = len(keep)\n", mode="plain")
    task = sandbox.loop.create_task(sandbox.client.execute(request))
    sandbox.loop.run_until_complete(__import__("asyncio").sleep(1.0))
    running = sandbox.stats().running_pids
    assert running
    found = scan_memory(running[0], marker_forms(marker))
    assert "raw" in found
    assert sandbox.loop.run_until_complete(task).outcome == "ok"
