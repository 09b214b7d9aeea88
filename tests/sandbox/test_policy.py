"""compile_program / compile_skill: the layers per mode, the wire format, augmented assignment."""

from __future__ import annotations

import pytest

from sandbox import (
    CompiledProgram,
    PolicyConfig,
    PolicyError,
    SandboxConfig,
    compile_program,
    compile_skill,
    run_program,
)
from sandbox.api import RESERVED_NAMES

DUNDER_WALK = "x = ().__class__\n"
AUGMENTED = '''
calls = []
def key():
    calls.append(1)
    return "a"
d = {"a": 1}
d[key()] += 10
class Counter:
    def __init__(self):
        self.n = 0
c = Counter()
c.n += 5
lst = [[1]]
lst[0] += [2]
result = [d["a"], len(calls), c.n, lst]
'''


def _run(program: CompiledProgram, namespace=None):
    return run_program(program, namespace or {}, state={}, stdout_cap_bytes=10_000)


def test_compile_program_full_mode_refuses_with_ast_rules():
    """It raises one PolicyError carrying the AST layer's violations."""
    with pytest.raises(PolicyError) as caught:
        compile_program(DUNDER_WALK + "import os\n", SandboxConfig())
    assert [v.rule for v in caught.value.violations] == ["underscore-attribute", "import"]
    assert caught.value.exit_code == 2


def test_compile_program_restricted_only_mode_still_refuses_through_restrictedpython():
    """It refuses a dunder walk with the AST check off, through our RestrictedPython policy."""
    with pytest.raises(PolicyError) as caught:
        compile_program(DUNDER_WALK, PolicyConfig(mode="restricted_only"))
    assert [(v.rule, v.line) for v in caught.value.violations] == [("restricted", 1)]
    assert "__class__" in caught.value.violations[0].message


def test_compile_program_plain_mode_compiles_anything_valid():
    """It compiles with the builtin compiler in plain mode (only the OS layers remain)."""
    program = compile_program("import os\nresult = os.sep\n", PolicyConfig(mode="plain"))
    assert program.mode == "plain"
    assert _run(program).result == "/"


def test_compile_program_size_cap_holds_in_every_mode():
    """It refuses oversized code whatever the mode."""
    for mode in ("full", "restricted_only", "plain"):
        with pytest.raises(PolicyError) as caught:
            compile_program("x = 1\n" * 100, PolicyConfig(mode=mode, max_code_bytes=100))
        assert caught.value.rule == "code-size"


def test_compile_program_round_trips_through_bytes():
    """It serialises to bytes and back to a program that runs the same."""
    program = compile_program("result = sum(i for i in range(5))\n", SandboxConfig())
    copy = CompiledProgram.from_bytes(program.to_bytes())
    assert (copy.mode, copy.filename, copy.source_sha256, copy.source) == (
        program.mode, program.filename, program.source_sha256, program.source)
    assert _run(copy).result == 10


def test_compiled_program_from_bytes_refuses_foreign_data():
    """It refuses bytes that are not a compiled program."""
    import marshal

    for data in (b"garbage", marshal.dumps(("other", 1)), b""):
        with pytest.raises(ValueError):
            CompiledProgram.from_bytes(data)


@pytest.mark.parametrize("mode", ["full", "restricted_only"])
def test_compile_program_augmented_item_and_attribute_assignment(mode):
    """It supports obj[k] += v and obj.a += v through the guards, evaluating the key once."""
    run = _run(compile_program(AUGMENTED, PolicyConfig(mode=mode)))
    assert run.outcome == "ok", run.error
    assert run.result == [11, 1, 5, [[1, 2]]]


def test_compile_program_augmented_assignment_cannot_write_read_only_objects():
    """It routes augmented attribute writes through the write guard."""
    run = _run(compile_program("import json\njson.dumps += 'x'\n", PolicyConfig(mode="restricted_only")))
    assert run.outcome == "runtime_error"


def test_compile_program_refuses_non_text():
    """It refuses a program that is not a str."""
    with pytest.raises(PolicyError) as caught:
        compile_program(b"x = 1", SandboxConfig())  # type: ignore[arg-type]
    assert caught.value.rule == "syntax"


def test_compile_skill_accepts_one_function_named_like_the_skill():
    """It compiles a docstring and one def of the skill's name, with literal defaults, builtin annotations and
    imports inside the function; the compiled program knows which global names it may look up."""
    source = ('"""Paths of hits."""\ndef top_paths(hits: list, k: int | None = 5, tag="x", neg=-1, pair=(1, "a")) '
              '-> list[str]:\n    import json\n    from json import dumps\n    return [h.path for h in hits][:k]\n')
    program = compile_skill("top_paths", source, SandboxConfig(), reserved_names=RESERVED_NAMES)
    assert program.filename == "<skill:top_paths>"
    assert {"top_paths", "json", "dumps"} <= program.global_names()
    assert "path" not in program.global_names()  # attributes are read through _getattr_, not by name


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("search", "def search():\n    pass\n"),
        ("len", "def len():\n    pass\n"),
        ("_hidden", "def _hidden():\n    pass\n"),
        ("two", "def two():\n    pass\ndef other():\n    pass\n"),
        ("named", "def other():\n    pass\n"),
        ("side", "x = 1\ndef side():\n    pass\n"),
        ("bad", "def bad():\n    return ().__class__\n"),
        ("top_import", "import json\ndef top_import():\n    return json\n"),
        ("aliased", "import json as search\ndef aliased():\n    return 1\n"),
        ("inner_alias", "def inner_alias():\n    import json as read\n    return read\n"),
        ("from_alias", "def from_alias():\n    from json import loads as state\n    return state\n"),
        ("module_alias", "def module_alias():\n    import re as json\n    return json\n"),
        ("assigned", "def assigned():\n    return 1\nsearch = assigned\n"),
        ("rebinds", "def rebinds():\n    global search\n    search = len\n"),
        ("local", "def local():\n    files = 1\n    return files\n"),
        ("param", "def param(read):\n    return read\n"),
        ("walrus", "def walrus():\n    return [(state := 1)]\n"),
        ("builtin", "def builtin():\n    len = 3\n    return len\n"),
        ("new_api", "def new_api():\n    grep = 1\n    return grep\n"),
        ("decorated", "@print\ndef decorated():\n    pass\n"),
        ("default_call", "def default_call(x=print('loaded')):\n    pass\n"),
        ("kw_default", "def kw_default(*, x=[len]):\n    pass\n"),
        ("lambda_default", "def lambda_default(x=lambda: 1):\n    pass\n"),
        ("annotated", "def annotated(x: print('loaded')):\n    pass\n"),
        ("returns", "def returns() -> search:\n    pass\n"),
        ("class_only", "class class_only:\n    pass\n"),
    ],
)
def test_compile_skill_refuses_bad_skills(name, source):
    """It refuses shadowing names, any binding of an API/builtin/module name (aliases, assignments, globals,
    parameters), top-level statements, code that would run at load time and policy violations."""
    with pytest.raises(PolicyError) as caught:
        compile_skill(name, source, SandboxConfig(), reserved_names=RESERVED_NAMES)
    assert caught.value.rule in ("skill", "restricted", "underscore-attribute")


