"""AST pre-check: the allowed syntax passes; every refusal names its rule, line and column."""

from __future__ import annotations

import pytest

from sandbox import PolicyConfig, validate_source
from sandbox.validate import REFUSED_BUILTINS

CONTRACT_PROGRAM = '''
import json, re, math
from collections import Counter, defaultdict
counts = Counter()
total = 0
total += 1
a, (b, c) = 1, (2, 3)
if (n := len([1, 2])) > 1:
    pass
for i in range(3):
    if i == 1:
        continue
    if i == 2:
        break
while total < 3:
    total += 1
def f(x, y=2, *args, **kwargs):
    return x + y
g = lambda v: v * 2
squares = [i * i for i in range(3)]
pairs = {k: v for k, v in zip("ab", (1, 2))}
uniq = {i % 2 for i in range(4)}
gen = sum(i for i in range(4))
try:
    raise ValueError("x")
except ValueError as exc:
    message = f"{exc!r:>10} {total}"
else:
    pass
finally:
    pass
assert total == 3, "total"
class Box:
    def __init__(self, value):
        self.value = value
    def double(self):
        return self.value * 2
def gen_items():
    yield 1
    yield from [2, 3]
del pairs["a"]
_ = 1
type = "python"
print(type, json.dumps([1]), re.sub("a", "b", "a"), math.sqrt(4))
'''
FRAME_WALK = "g = (x for x in [1])\nframe = g.gi_frame.f_back\n"
MIXED = "import os\nx = ().__class__\nprint(open('f'))\n"


def test_validate_source_accepts_contract_syntax():
    """It accepts a program using every construct the contract allows."""
    assert validate_source(CONTRACT_PROGRAM) == ()


def test_validate_source_reports_frame_attributes_at_their_name():
    """It reports each frame attribute with rule, line and the column of the attribute name."""
    found = [(v.rule, v.line, v.col) for v in validate_source(FRAME_WALK)]
    assert found == [("frame-attribute", 2, 11), ("frame-attribute", 2, 20)]


def test_validate_source_collects_all_violations_in_source_order():
    """It collects every violation of a program, in source order, each with a hint."""
    violations = validate_source(MIXED)
    assert [(v.rule, v.line, v.col) for v in violations] == [
        ("import", 1, 1), ("underscore-attribute", 2, 8), ("forbidden-builtin", 3, 7)]
    assert all(v.hint and v.message for v in violations)
    assert "read(path)" in violations[2].hint


@pytest.mark.parametrize("name", sorted(set(REFUSED_BUILTINS) - {"__import__"}))
def test_validate_source_refuses_each_refused_builtin(name):
    """It refuses a call of every builtin the contract refuses, naming it."""
    violations = validate_source(f"{name}(1)\n")
    assert [(v.rule, v.line, v.col) for v in violations] == [("forbidden-builtin", 1, 1)]
    assert repr(name) in violations[0].message


def test_validate_source_allows_refused_builtin_names_as_own_variables():
    """It lets a program use names like id or type for its own values."""
    assert validate_source("id = 3\ntype = 'x'\nprint(id, type)\n") == ()


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("async def f():\n    pass\n", "forbidden-syntax"),
        ("match 1:\n    case 1:\n        pass\n", "forbidden-syntax"),
        ("def f():\n    x = 1\n    def g():\n        nonlocal x\n", "forbidden-syntax"),
        ("try:\n    pass\nexcept* ValueError:\n    pass\n", "forbidden-syntax"),
        ("x: int = 1\n", "forbidden-syntax"),
        ("from json import decoder\n", "import"),
        ("from . import x\n", "import"),
        ("import collections.abc\n", "import"),
        ("from json import *\n", "import"),
        ("print('{0.__class__}'.format(1))\n", "format-attribute"),
        ("print('{a}'.format_map({}))\n", "format-attribute"),
        ("def f(_getattr_, /):\n    pass\n", "underscore-name"),
        ("dict(_x=1)\n", "underscore-name"),
        ("def __init__(self):\n    pass\n", "underscore-name"),
        ("class A:\n    def __eq__(self, other):\n        pass\n", "underscore-name"),
        ("class A(metaclass=int):\n    pass\n", "class-keyword"),
        ("x = 1\nx.f_globals\n", "frame-attribute"),
        ("x = 1\nx.tb_next\n", "frame-attribute"),
        ("x = 1\nx.co_code\n", "frame-attribute"),
    ],
)
def test_validate_source_refuses_construct(source, rule):
    """It refuses constructs outside the contract with the matching rule."""
    assert rule in {v.rule for v in validate_source(source)}


def test_validate_source_refuses_nfkc_spelled_builtin():
    """It refuses eval spelled with fullwidth letters (the parser normalises identifiers)."""
    assert [v.rule for v in validate_source("ｅｖａｌ('1')\n")] == ["forbidden-builtin"]


def test_validate_source_refuses_oversized_code():
    """It refuses code over the byte cap before parsing it."""
    violations = validate_source("x = 1\n" * 10, PolicyConfig(max_code_bytes=20))
    assert [(v.rule, v.line) for v in violations] == [("code-size", 1)]
    assert "60 bytes" in violations[0].message


def test_validate_source_refuses_deep_and_large_trees():
    """It refuses ASTs deeper or larger than the caps."""
    assert [v.rule for v in validate_source("x = " + "[" * 30 + "]" * 30, PolicyConfig(max_ast_depth=20))] == ["ast-depth"]
    assert [v.rule for v in validate_source("x = [1] * 50\n" * 50, PolicyConfig(max_ast_nodes=100))] == ["ast-size"]
    assert [v.rule for v in validate_source("x = " + "-" * 20000 + "1")] == ["ast-depth"]


def test_validate_source_reports_syntax_error_position():
    """It reports a syntax error with its line and column."""
    violations = validate_source("x = 1\ny = (\n")
    assert [(v.rule, v.line) for v in violations] == [("syntax", 2)]


def test_validate_source_refuses_null_bytes():
    """It reports null bytes as a syntax violation instead of crashing."""
    assert [v.rule for v in validate_source("x = 1\x00")] == ["syntax"]
