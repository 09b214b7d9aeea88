"""The escape table against the Python layers alone (in-process, no fork, no OS layers).

Mode "full" must refuse each attack with its AST rule or contain it at run time; mode
"restricted_only" (AST pre-check off) must refuse or contain it too. After each attack a normal
program still answers correctly. Resource attacks only the OS layers can stop are not run here.
"""

from __future__ import annotations

import json

import pytest

from sandbox import PolicyConfig, PolicyError, SandboxHit, TokenCounter, build_api, compile_program, run_program
from tests.sandbox.escapes.attacks import ATTACKS, Attack, Canaries

PYTHON_ATTACKS = [attack for attack in ATTACKS if attack.layer == "python"]
ATTACK_PARAMS = [pytest.param(attack, id=attack.name) for attack in PYTHON_ATTACKS]
NORMAL_PROGRAM = """
import json
hits = [h for h in HITS if h.language == 'python']
result = {'paths': [h.path for h in hits], 'dumped': json.loads(json.dumps(hits[0]))['path'], 'n': len(help())}
"""


@pytest.fixture(scope="module")
def token_counter() -> TokenCounter:
    return TokenCounter.open()


@pytest.fixture(scope="module")
def searcher(small_index_bm25):
    """The API's searcher for attacks through read() and friends: BM25 only, no model."""
    from search import Searcher

    return Searcher.open(small_index_bm25, load_models=False)


@pytest.fixture
def canaries(tmp_path):
    with Canaries(tmp_path) as arranged:
        yield arranged


def _namespace(searcher, token_counter) -> dict[str, object]:
    namespace = build_api(searcher, token_counter).namespace()
    namespace["HITS"] = [SandboxHit(id="src/a.py:1-3", doc_id="src/a.py", path="src/a.py", start_line=1, end_line=3,
                                    language="python", title="a.py", score=1.5, text="def a():\n    return 1\n")]
    return namespace


def _assert_normal_program_works(namespace: dict[str, object]) -> None:
    run = run_program(compile_program(NORMAL_PROGRAM, PolicyConfig()), namespace, state={}, stdout_cap_bytes=10_000)
    assert run.outcome == "ok", run.error
    assert run.result["paths"] == ["src/a.py"] and run.result["dumped"] == "src/a.py" and run.result["n"] > 100


def _run_attack(attack: Attack, mode: str, canaries: Canaries, request, token_counter) -> tuple[str, object]:
    # Only the attacks on search/read/files need the index (built with the model: those params are marked).
    searcher = request.getfixturevalue("searcher") if attack.needs_index else None
    code = canaries.render(attack)
    namespace = _namespace(searcher, token_counter)
    try:
        program = compile_program(code, PolicyConfig(mode=mode))
    except PolicyError as exc:
        assert canaries.tripped(str(exc)) == []
        _assert_normal_program_works(namespace)
        return "refused", exc
    run = run_program(program, namespace, state={}, stdout_cap_bytes=100_000)
    assert canaries.tripped(json.dumps(run.to_dict())) == [], run.to_dict()
    _assert_normal_program_works(namespace)
    return "ran", run


@pytest.mark.parametrize("attack", ATTACK_PARAMS)
def test_escape_full_mode_refused_or_contained(attack, canaries, request, token_counter):
    """It refuses the attack with the expected AST rule, or runs it to the expected outcome with no canary tripped."""
    how, outcome = _run_attack(attack, "full", canaries, request, token_counter)
    if attack.ast_rules:
        assert how == "refused", f"expected refusal by {attack.ast_rules}, but it ran: {outcome}"
        rules = {violation.rule for violation in outcome.violations}
        assert rules & set(attack.ast_rules), outcome.describe()
    else:
        assert how == "ran", f"expected to run and be contained, but refused: {outcome}"
        assert outcome.outcome == attack.runtime_outcome, outcome.to_dict()


@pytest.mark.parametrize("attack", ATTACK_PARAMS)
def test_escape_restricted_only_mode_contained(attack, canaries, request, token_counter):
    """Without the AST pre-check, RestrictedPython and the runtime guards alone refuse or contain the attack."""
    how, outcome = _run_attack(attack, "restricted_only", canaries, request, token_counter)
    if how == "ran" and attack.ast_rules and attack.source != "resource":
        # Valid for RestrictedPython but refused by the AST layer: it must fail at run time.
        assert outcome.outcome == "runtime_error", outcome.to_dict()


def test_escape_table_is_large_and_cited():
    """It holds at least 50 distinct attacks, each citing a known source."""
    from tests.sandbox.escapes.attacks import SOURCES

    assert len({attack.name for attack in ATTACKS}) == len(ATTACKS) >= 50
    assert all(attack.source in SOURCES for attack in ATTACKS)
