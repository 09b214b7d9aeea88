"""The escape table: known sandbox-escape techniques as data, each with the side effect it must not cause.

Every layer configuration runs the SAME table: the Python layers in-process here
(tests/sandbox/escapes/test_python_layers.py, modes "full" and "restricted_only"), and the full
fork-server path, including mode "plain" (both Python layers off), in the OS-layer tests.

Placeholders in ``code`` are replaced by ``Canaries.render``: SECRET_FILE (path of a file holding a
secret), SECRET_ENV (name of an env var holding a secret), TCP_PORT (a loopback listener),
WRITE_PATH (a path that must not come to exist), VICTIM_PID (a process that must stay alive).
``HITS`` is a list of real sandbox hits and the API names (help, compact, ...) are globals.

Fields: ``canary`` names the side effect the attack aims for ("file", "env", "tcp", "write",
"kill", or "none" for pure introspection/resource attacks; every canary is checked anyway);
``ast_rule`` is the rule the AST layer must refuse it with in mode "full" (None: the program is
valid Python for our policy and must be contained at run time with ``runtime_outcome``);
``layer`` is "python" when the Python layers must stop it on their own, "os" when only the OS
layers can (CPU/memory exhaustion: never run in-process); ``needs_index``: uses search/read/files.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ATTACKS", "Attack", "Canaries"]

# Sources, cited per attack by key.
SOURCES = {
    "RP-2023-37271": "RestrictedPython GHSA-wqc8-x2pr-7jqh / CVE-2023-37271: generator gi_frame walk to f_globals",
    "RP-2023-41039": "RestrictedPython GHSA-xjw2-6jm9-rf67 / CVE-2023-41039: str.format / string.Formatter attribute walk",
    "RP-2025-22153": "RestrictedPython GHSA-8fmr-5h7j-5jxg / CVE-2025-22153: try/except* type confusion",
    "RP-ffg3": "RestrictedPython GHSA-ffg3-p8fm-mjx2: positional-only parameters shadow guard hooks (fixed 8.3)",
    "RP-hp3v": "RestrictedPython GHSA-hp3v-5vw7-fx9w: string.Formatter field resolution (fixed 8.4)",
    "ronacher-2016": "Armin Ronacher, 'Be Careful with Python's New-Style String Format' (2016), Jinja2 sandbox bypass",
    "simpleeval-138": "danthedeckie/simpleeval issue 138: escaping the sandbox through generators (gi_frame/cr_frame)",
    "smol-2025-5120": "smolagents CVE-2025-5120: getattr-style leakage to reach restricted modules",
    "smol-2025-9959": "smolagents CVE-2025-9959: class-hierarchy traversal to subprocess.Popen",
    "smol-2094": "huggingface/smolagents issue 2094: sandbox escape via ctypes",
    "smol-2395": "huggingface/smolagents issue 2395: dunder methods in user classes run in the host",
    "agt-2631": "microsoft/agent-governance-toolkit PR 2631: sys.modules cache bypass, dunder traversal, frame walks",
    "crewai-4643": "crewAIInc/crewAI PR 4643 review: type.__dict__ mappingproxy + chr()-built dunder names",
    "ocs-4563": "dimagi/open-chat-studio PR 4563: shadowed _write_ poisons a shared module (json.dumps)",
    "pyjail": "pyjail writeups (HackTricks 'Bypass Python sandboxes'): subclasses walk, catch_warnings, decorators",
    "pep3131": "PEP 3131 / CPython tokenizer: identifiers are NFKC-normalised (fullwidth eval == eval)",
    "kmcp-10-wire": "knowledge-mcp issue 10 review: output that stalls redaction, replies too deep or unencodable",
    "module-chains": "stdlib module-internals chains: a whitelisted module's imports lead to sys/os (datetime.sys ...)",
    "cpython-import-from": "CPython IMPORT_FROM falls back to sys.modules[module.__name__ + '.' + name]",
    "resource": "classic resource exhaustion (CPU spin, big ints, memory bombs, output floods, ReDoS)",
    "api": "knowledge-mcp API surface: path traversal, shared-object mutation, state smuggling",
    "cpython-123378": "CPython issue 123378: Unicode*Error start/end are not bounds-checked when rendered (<= 3.13)",
    "kmcp-10": "knowledge-mcp issue 10 review: hostile exception data, unencodable or deep replies, shared objects",
}


@dataclass(frozen=True)
class Attack:
    name: str
    source: str
    code: str
    canary: str = "none"
    ast_rule: str | tuple[str, ...] | None = None
    runtime_outcome: str = "runtime_error"
    layer: str = "python"
    needs_index: bool = False

    @property
    def ast_rules(self) -> tuple[str, ...]:
        if self.ast_rule is None:
            return ()
        return (self.ast_rule,) if isinstance(self.ast_rule, str) else self.ast_rule


def _a(name: str, source: str, code: str, **kwargs: object) -> Attack:
    assert source in SOURCES, source
    return Attack(name=name, source=source, code=code.strip("\n") + "\n", **kwargs)  # type: ignore[arg-type]


ATTACKS: tuple[Attack, ...] = (
    # ---- class-hierarchy walks ---------------------------------------------------------------
    _a("subclasses_walk", "pyjail", "result = [c.__name__ for c in ().__class__.__bases__[0].__subclasses__()]",
       ast_rule="underscore-attribute"),
    _a("catch_warnings_builtins", "pyjail", """
cw = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]
cw()._module.__builtins__['__import__']('os').system('touch WRITE_PATH')
""", canary="write", ast_rule="underscore-attribute"),
    _a("popen_via_subclasses", "smol-2025-9959", """
popen = [c for c in ''.__class__.__mro__[-1].__subclasses__() if c.__name__ == 'Popen'][0]
popen(['touch', 'WRITE_PATH'])
""", canary="write", ast_rule="underscore-attribute"),
    _a("mro_object_subclasses", "pyjail", "base = str.mro()[-1]\nprint(base.__subclasses__())",
       ast_rule="underscore-attribute"),
    _a("type_dict_mappingproxy", "crewai-4643", """
name = chr(95) * 2 + 'subclasses' + chr(95) * 2
print(type.__dict__[name](str.mro()[-1]))
""", ast_rule=("forbidden-builtin", "underscore-attribute")),
    _a("reduce_ex_copyreg", "pyjail", "print((1).__reduce_ex__(2))", ast_rule="underscore-attribute"),
    # ---- imports -----------------------------------------------------------------------------
    _a("import_os_system", "pyjail", "import os\nos.system('touch WRITE_PATH')", canary="write", ast_rule="import"),
    _a("from_os_import_system", "pyjail", "from os import system\nsystem('touch WRITE_PATH')", canary="write",
       ast_rule="import"),
    _a("dunder_import_call", "pyjail", "__import__('os').system('touch WRITE_PATH')", canary="write",
       ast_rule="underscore-name"),
    _a("builtins_subscript_open", "pyjail", "print(__builtins__['open']('SECRET_FILE').read())", canary="file",
       ast_rule="underscore-name"),
    _a("sys_modules_cache", "agt-2631", "import sys\nsys.modules['os'].system('touch WRITE_PATH')", canary="write",
       ast_rule="import"),
    _a("importlib_import_module", "agt-2631", "import importlib\nimportlib.import_module('os').getenv('SECRET_ENV')",
       canary="env", ast_rule="import"),
    _a("socket_connect", "pyjail", "import socket\nsocket.create_connection(('127.0.0.1', TCP_PORT))", canary="tcp",
       ast_rule="import"),
    _a("ctypes_libc_system", "smol-2094", "import ctypes\nctypes.CDLL(None).system(b'touch WRITE_PATH')",
       canary="write", ast_rule="import"),
    _a("os_kill_victim", "pyjail", "import os\nos.kill(VICTIM_PID, 9)", canary="kill", ast_rule="import"),
    _a("import_submodule_collections_abc", "module-chains", "import collections.abc\nprint(collections.abc)",
       ast_rule="import"),
    _a("from_json_import_decoder", "cpython-import-from", "from json import decoder\nprint(decoder.sys)",
       ast_rule="import"),
    _a("typing_get_type_hints_eval", "module-chains", """
import typing
def f(x: "__import__('os').system('touch WRITE_PATH')"):
    pass
typing.get_type_hints(f)
""", canary="write", ast_rule="import"),
    _a("relative_import", "pyjail", "from . import secrets", ast_rule="import"),
    # ---- refused builtins ----------------------------------------------------------------------
    _a("open_secret_file", "pyjail", "print(open('SECRET_FILE').read())", canary="file", ast_rule="forbidden-builtin"),
    _a("eval_import_env", "pyjail", "print(eval(\"__import__('os').environ['SECRET_ENV']\"))", canary="env",
       ast_rule="forbidden-builtin"),
    _a("exec_string", "pyjail", "exec(\"import os; os.system('touch WRITE_PATH')\")", canary="write",
       ast_rule="forbidden-builtin"),
    _a("compile_and_call", "pyjail", "code = compile('1', 'x', 'eval')\nprint(code)", ast_rule="forbidden-builtin"),
    _a("getattr_built_name", "smol-2025-5120", "print(getattr((), '__cla' + 'ss__'))", ast_rule="forbidden-builtin"),
    _a("globals_builtins", "pyjail", "print(globals()['__builtins__'])", ast_rule=("forbidden-builtin", "underscore-name")),
    _a("vars_on_module_proxy", "pyjail", "import json\nprint(vars(json))", ast_rule="forbidden-builtin"),
    _a("type_three_arg_class", "pyjail", "X = type('X', (str,), {'lower': lambda s: s})\nprint(X('a'))",
       ast_rule="forbidden-builtin"),
    _a("decorator_exec_input", "pyjail", "@exec\n@input\nclass X:\n    pass", ast_rule="forbidden-builtin"),
    _a("breakpoint_pdb", "pyjail", "breakpoint()", ast_rule="forbidden-builtin"),
    _a("memoryview_obj", "pyjail", "print(memoryview(b'x').obj)", ast_rule="forbidden-builtin"),
    _a("super_init_walk", "pyjail", """
class A:
    def __init__(self):
        print(super().__init__.__globals__)
A()
""", ast_rule=("forbidden-builtin", "underscore-attribute")),
    _a("nfkc_fullwidth_eval", "pep3131", "print(ｅｖａｌ(\"__import__('os').getenv('SECRET_ENV')\"))", canary="env",
       ast_rule="forbidden-builtin"),
    _a("nfkc_fullwidth_open", "pep3131", "print(ｏｐｅｎ('SECRET_FILE').read())", canary="file",
       ast_rule="forbidden-builtin"),
    # ---- frames, code, tracebacks ------------------------------------------------------------
    _a("generator_gi_frame_globals", "RP-2023-37271", """
g = (x for x in [1])
print(g.gi_frame.f_back.f_back.f_globals['__builtins__'])
""", ast_rule="frame-attribute"),
    _a("generator_function_frame", "simpleeval-138", """
def gen():
    yield 1
print(gen().gi_frame.f_globals)
""", ast_rule="frame-attribute"),
    _a("gi_yieldfrom_chain", "simpleeval-138", """
def inner():
    yield 1
def outer():
    yield from inner()
g = outer()
next(g)
print(g.gi_yieldfrom.gi_frame.f_locals)
""", ast_rule="frame-attribute"),
    _a("gi_code_consts", "RP-2023-37271", "g = (x for x in [1])\nprint(g.gi_code.co_consts)", ast_rule="frame-attribute"),
    _a("coroutine_cr_frame", "simpleeval-138", "async def f():\n    pass\nprint(f().cr_frame.f_globals)",
       ast_rule="forbidden-syntax"),
    _a("traceback_tb_frame", "agt-2631", """
try:
    1 / 0
except Exception as e:
    print(e.__traceback__.tb_frame.f_back.f_globals)
""", ast_rule="underscore-attribute"),
    _a("generator_throw_traceback", "agt-2631", """
g = (i for i in [1])
try:
    g.throw(ValueError('x'))
except ValueError as e:
    print(e.__traceback__.tb_next)
""", ast_rule="underscore-attribute"),
    _a("lambda_code_object", "pyjail", "f = lambda: 0\nprint(f.__code__.co_consts)", ast_rule="underscore-attribute"),
    _a("py2_func_globals", "pyjail", "def f():\n    pass\nprint(f.func_globals)", ast_rule="frame-attribute"),
    _a("api_function_globals", "agt-2631", "print(help.__globals__['search'])", ast_rule="underscore-attribute"),
    _a("api_function_closure", "agt-2631", "print(help.__closure__[0].cell_contents)", ast_rule="underscore-attribute"),
    _a("attribute_error_obj_leak", "smol-2025-5120", """
import json
leaked = None
try:
    json.decoder
except AttributeError as e:
    leaked = e.obj
print(leaked.decoder.scanstring)
"""),
    # ---- format-string walks -----------------------------------------------------------------
    _a("str_format_class_walk", "ronacher-2016", "print('{0.__class__.__mro__}'.format(1))", ast_rule="format-attribute"),
    _a("str_format_globals_walk", "ronacher-2016", "def f():\n    pass\nprint('{0.__globals__[__builtins__]}'.format(f))",
       ast_rule="format-attribute"),
    _a("format_map_walk", "RP-2023-41039", "print('{a.__class__}'.format_map({'a': 1}))", ast_rule="format-attribute"),
    _a("unbound_str_format", "RP-2023-41039", "fmt = str.format\nprint(fmt('{0.__class__.__base__}', 1))",
       ast_rule="format-attribute"),
    _a("map_str_format", "RP-2023-41039", "print(list(map(str.format, ['{0.__class__}'], [1])))",
       ast_rule="format-attribute"),
    _a("string_formatter_get_field", "RP-hp3v", "import string\nprint(string.Formatter().get_field('0.__class__', [1], {}))"),
    _a("string_formatter_import", "RP-hp3v", "from string import Formatter\nprint(Formatter().vformat('{0.__class__}', [1], {}))",
       ast_rule="import"),
    _a("operator_attrgetter", "smol-2025-5120", "import operator\nprint(operator.attrgetter('__class__')(1))"),
    _a("operator_methodcaller_format", "RP-2023-41039", "from operator import methodcaller\nprint(methodcaller('format', 1)('{0.__class__}'))",
       ast_rule="import"),
    _a("percent_format_on_hit", "RP-2023-41039", "print('%(__class__)s' % HITS[0])"),
    # ---- module-internals chains --------------------------------------------------------------
    _a("datetime_sys_environ", "module-chains", "import datetime\nprint(datetime.sys.modules['os'].environ['SECRET_ENV'])",
       canary="env"),
    _a("statistics_sys_system", "module-chains", "import statistics\nstatistics.sys.modules['os'].system('touch WRITE_PATH')",
       canary="write"),
    _a("re_enum_sys", "module-chains", "import re\nre.enum.sys.modules['os'].system('touch WRITE_PATH')", canary="write"),
    _a("textwrap_re_module", "module-chains", "import textwrap\nprint(textwrap.re.enum.sys)"),
    _a("fnmatch_os_system", "module-chains", "import fnmatch\nfnmatch.os.system('touch WRITE_PATH')", canary="write"),
    _a("collections_abc_attribute", "module-chains", "import collections\nprint(collections.abc.sys)"),
    _a("json_decoder_attribute", "module-chains", "import json\nprint(json.decoder.scanstring)"),
    _a("json_decoder_init_globals", "module-chains", "import json\nprint(json.JSONDecoder.__init__.__globals__['sys'])",
       ast_rule="underscore-attribute"),
    _a("functools_partial_globals", "module-chains", "import functools\nprint(functools.partial(len).func.__self__)",
       ast_rule="underscore-attribute"),
    _a("math_builtin_self_module", "module-chains", "import math\nprint(math.sqrt.__self__.__loader__)",
       ast_rule="underscore-attribute"),
    _a("json_hook_internals", "module-chains", "import json\nprint(json.loads('{\"a\": 1}', object_hook=lambda d: d.__class__))",
       ast_rule="underscore-attribute"),
    _a("namedtuple_field_injection", "module-chains", """
from collections import namedtuple
P = namedtuple('P', ["x=__import__('os').system('touch WRITE_PATH')"])
""", canary="write"),
    # ---- string-keyed lookups -------------------------------------------------------------------
    _a("module_proxy_subscript", "module-chains", "import json\nprint(json['__dict__'])"),
    _a("module_proxy_get", "module-chains", "import json\nprint(json.get('__dict__'))"),
    _a("module_proxy_iterate", "module-chains", "import json\nprint(list(json))"),
    _a("hit_dunder_key", "crewai-4643", "print(HITS[0]['__class__'])"),
    _a("hit_chr_built_key", "crewai-4643", "name = chr(95) * 2 + 'dict' + chr(95) * 2\nprint(HITS[0][name])"),
    _a("hit_get_dunder", "crewai-4643", "print(HITS[0].get('__dict__'))", runtime_outcome="ok"),
    _a("hit_fullwidth_key", "pep3131", "print(HITS[0]['＿＿class＿＿'])"),
    # ---- guard-hook shadowing and shared-object mutation --------------------------------------
    _a("positional_only_guard_shadow", "RP-ffg3", """
def f(_getattr_=lambda o, n: None, /):
    return ().__class__
print(f())
""", ast_rule="underscore-name"),
    _a("walrus_guard_rebind", "RP-ffg3", "[(_write_ := lambda o: o)]", ast_rule="underscore-name"),
    _a("global_guard_rebind", "RP-ffg3", "def f():\n    global _getiter_\n    _getiter_ = iter\nf()",
       ast_rule="underscore-name"),
    _a("keyword_guard_name", "RP-ffg3", "dict(_getattr_=1)", ast_rule="underscore-name"),
    _a("shared_module_poisoning", "ocs-4563", "import json\njson.dumps = lambda *a, **k: 'pwned'"),
    _a("module_attribute_delete", "ocs-4563", "import json\ndel json.loads"),
    _a("module_augassign_poison", "ocs-4563", "import json\njson.dumps += 'x'"),
    _a("hit_mutation", "api", "h = HITS[0]\nh.path = 'SECRET_FILE'"),
    _a("api_function_attribute_write", "api", "help.cache = {}"),
    _a("state_smuggles_function", "api", "state['f'] = help"),
    _a("print_to_file_object", "api", "print('x', file=HITS)"),
    # ---- classes --------------------------------------------------------------------------------
    _a("class_dunder_methods", "smol-2395", """
class Bomb:
    def __del__(self):
        print('x')
    def __eq__(self, other):
        return True
""", ast_rule="underscore-name"),
    _a("class_getattribute_override", "smol-2395", "class A:\n    def __getattribute__(self, n):\n        return 1",
       ast_rule="underscore-name"),
    _a("class_subclasses_str", "smol-2395", """
class S(str):
    def lower(self):
        return 'pwned'
result = compact(S('abc'))
"""),
    _a("class_metaclass_keyword", "smol-2395", "class M(metaclass=print):\n    pass", ast_rule="class-keyword"),
    _a("class_slots_dunder", "smol-2395", "class A:\n    __slots__ = ()", ast_rule="underscore-name"),
    # ---- syntax the contract refuses ------------------------------------------------------------
    _a("except_star_group", "RP-2025-22153", """
try:
    raise ExceptionGroup('g', [ValueError(1)])
except* ValueError as eg:
    print(eg.exceptions)
""", ast_rule="forbidden-syntax"),
    _a("match_class_pattern_walk", "agt-2631", "match 1:\n    case int(__class__=c):\n        print(c)",
       ast_rule="forbidden-syntax"),
    _a("nonlocal_rebind", "RP-ffg3", "def f():\n    x = 1\n    def g():\n        nonlocal x\n    return g",
       ast_rule="forbidden-syntax"),
    _a("oversized_program", "resource", "x = 1\n" * 20000, ast_rule="code-size"),
    _a("deep_nesting", "resource", "x = " + "[" * 150 + "]" * 150, ast_rule=("ast-depth", "syntax")),
    _a("null_byte_source", "resource", "x = 1\x00", ast_rule="syntax"),
    # ---- the API surface ------------------------------------------------------------------------
    _a("read_secret_absolute", "api", "print(read('SECRET_FILE'))", canary="file", needs_index=True),
    _a("read_path_traversal", "api", "print(read('../' * 12 + 'SECRET_FILE'.lstrip('/')))", canary="file",
       needs_index=True),
    _a("read_proc_environ", "api", "print(read('/proc/self/environ'))", canary="env", needs_index=True),
    _a("files_absolute_glob", "api", "result = files('/**')\nprint(files('../**'))", runtime_outcome="ok",
       needs_index=True),
    # ---- raw-memory exceptions (CPython 123378): catch by name only --------------------------------
    _a("unicode_decode_error_negative_start", "cpython-123378",
       "e = UnicodeDecodeError('utf-8', b'ab', -40, -39, 'x')\nprint([str(e) for i in range(3)])",
       ast_rule="except-only-name"),
    _a("unicode_encode_error_negative_start", "cpython-123378",
       "print(str(UnicodeEncodeError('utf-8', 'ab', -4000, -3999, 'x')))", ast_rule="except-only-name"),
    _a("unicode_translate_error_build", "cpython-123378", "print(str(UnicodeTranslateError('ab', -9, -8, 'x')))",
       ast_rule="except-only-name"),
    _a("unicode_error_alias", "cpython-123378", "make = UnicodeDecodeError\nprint(str(make('utf-8', b'a', -9, -8, 'x')))",
       ast_rule="except-only-name"),
    _a("unicode_error_default_argument", "cpython-123378",
       "def f(k=UnicodeDecodeError):\n    return k('utf-8', b'a', -9, -8, 'x')\nprint(str(f()))",
       ast_rule="except-only-name"),
    _a("unicode_error_subclass_sets_start", "cpython-123378", """
class E(UnicodeDecodeError):
    pass
e = E('utf-8', b'ab', 0, 1, 'x')
e.start = -64
e.end = -63
print(str(e))
""", ast_rule="except-only-name"),
    _a("unicode_error_in_tuple", "cpython-123378", "kinds = (ValueError, UnicodeEncodeError)\nprint(kinds[1]('a', 'b', -9, -8, 'c'))",
       ast_rule="except-only-name"),
    _a("unicode_error_isinstance_probe", "cpython-123378", "print(isinstance(ValueError(), UnicodeDecodeError))",
       ast_rule="except-only-name"),
    _a("unicode_error_rebound", "cpython-123378", "UnicodeDecodeError = ValueError\nprint(UnicodeEncodeError('a', 'b', -9, -8, 'c'))",
       ast_rule="except-only-name"),
    _a("caught_unicode_error_sets_start", "cpython-123378", """
try:
    b'\\xff'.decode('utf-8')
except UnicodeDecodeError as exc:
    exc.start = -64
    exc.end = -63
    print(str(exc))
"""),
    _a("unicode_error_base_subclass", "cpython-123378", """
class E(UnicodeError):
    pass
e = E('x')
e.start = -64
e.end = -63
e.object = b'ab'
print(str(e))
""", runtime_outcome="ok"),
    _a("caught_unicode_error_fields_read", "cpython-123378", """
try:
    'x\\udcff'.encode('utf-8')
except UnicodeError as exc:
    print(exc.args[1:], str(exc))
""", runtime_outcome="ok"),
    _a("oserror_subclass_odd_fields", "kmcp-10", """
class E(OSError):
    pass
e = E(1, 'x')
e.errno = [1] * 10
e.strerror = {'a': 1}
e.filename = e
print(str(e))
""", runtime_outcome="ok"),
    # ---- replies a child cannot encode: every one must still parse -----------------------------
    _a("surrogate_in_stdout", "kmcp-10", "print('a' + chr(0xdcff) + 'b', sep=chr(0xdfff))", runtime_outcome="ok"),
    _a("surrogate_in_result_key", "kmcp-10", "result = {chr(0xd800): [chr(0xdbff)]}", runtime_outcome="ok"),
    _a("surrogate_in_state", "kmcp-10", "state[chr(0xdcff)] = {'v': chr(0xdcff)}\nresult = 1", runtime_outcome="ok"),
    _a("surrogate_in_exception", "kmcp-10", "raise ValueError('bad ' + chr(0xdcff))"),
    _a("deep_result_900", "kmcp-10", "x = 1\nfor i in range(900):\n    x = [x]\nresult = x", runtime_outcome="ok"),
    _a("deep_result_dict_300", "kmcp-10", "x = 1\nfor i in range(300):\n    x = {'k': x}\nresult = x",
       runtime_outcome="ok"),
    _a("deep_state_900", "kmcp-10", "x = 1\nfor i in range(900):\n    x = [x]\nstate['deep'] = x"),
    _a("cyclic_state", "kmcp-10", "d = {}\nd['d'] = d\nstate['cycle'] = d"),
    # ---- hostile exception attributes: runtime_error, never internal_error --------------------------
    _a("nameerror_unhashable_name", "kmcp-10", """
class N(NameError):
    pass
e = N('x')
e.name = ['unhashable']
raise e
"""),
    _a("nameerror_dict_name", "kmcp-10", "class N(NameError):\n    pass\ne = N()\ne.name = {'open': 1}\nraise e"),
    _a("importerror_odd_name_and_path", "kmcp-10", """
class E(ImportError):
    pass
e = E('x')
e.name = ['a']
e.path = {}
raise e
"""),
    _a("attributeerror_self_obj", "kmcp-10", "class E(AttributeError):\n    pass\ne = E('x')\ne.name = [1]\ne.obj = e\nraise e"),
    _a("exception_args_deeply_nested", "kmcp-10", "x = []\nfor i in range(5000):\n    x = [x]\nraise ValueError(x)"),
    _a("exception_huge_message", "kmcp-10", "raise ValueError('m' * 5_000_000)"),
    _a("exception_many_args", "kmcp-10", "raise Exception(*range(100000))"),
    _a("exception_chain_of_exceptions", "kmcp-10", "class E(KeyError):\n    pass\nraise E(E(E(E('nested'))))"),
    # ---- writes into shared library objects land on copies ----------------------------------------
    _a("textwrap_class_dict_setitem", "kmcp-10", """
import textwrap
textwrap.TextWrapper.unicode_whitespace_trans[32] = 88
assert textwrap.TextWrapper.unicode_whitespace_trans[32] == 32
assert textwrap.fill('a b', 80) == 'a b'
""", runtime_outcome="ok"),
    _a("textwrap_class_dict_update", "kmcp-10", """
import textwrap
textwrap.TextWrapper.unicode_whitespace_trans.update({32: 88})
assert textwrap.TextWrapper.unicode_whitespace_trans[32] == 32
""", runtime_outcome="ok"),
    _a("textwrap_instance_reaches_class_dict", "kmcp-10", """
import textwrap
w = textwrap.TextWrapper()
w.unicode_whitespace_trans.clear()
assert len(textwrap.TextWrapper().unicode_whitespace_trans) == 6
""", runtime_outcome="ok"),
    _a("textwrap_class_dict_kept_alias", "kmcp-10", """
import textwrap
d = textwrap.TextWrapper.unicode_whitespace_trans
del d[32]
d[10] = 0
assert textwrap.TextWrapper.unicode_whitespace_trans == {9: 32, 10: 32, 11: 32, 12: 32, 13: 32, 32: 32}
""", runtime_outcome="ok"),
    _a("library_instance_attribute_write", "kmcp-10", "import textwrap\nw = textwrap.TextWrapper()\nw.width = 3"),
    _a("api_results_fresh_per_call", "kmcp-10", """
mine = list_skills()
mine.append('x')
assert list_skills() == []
result = mine
""", runtime_outcome="ok"),
    # ---- resources ------------------------------------------------------------------------------
    _a("deep_recursion", "resource", "def f(n):\n    return f(n + 1)\nf(0)"),
    _a("print_flood", "resource", "for i in range(20000):\n    print('x' * 100)", runtime_outcome="ok"),
    _a("cpu_spin", "resource", "while True:\n    pass", layer="os"),
    _a("huge_power", "resource", "x = 10 ** 10 ** 8", layer="os"),
    _a("memory_bomb", "resource", "x = 'a' * (2 ** 40)", layer="os"),
    _a("list_memory_bomb", "resource", "x = [0] * (2 ** 36)", layer="os"),
    _a("redos", "resource", "import re\nre.match('(a+)+$', 'a' * 40 + '!')", layer="os"),
    # ---- replies: redaction stalls, wire-breaking results, budget overruns (the server side of issue 10)
    _a("redaction_backtrack_stdout", "kmcp-10-wire", "print('a-' * 6000)", runtime_outcome="ok"),
    _a("redaction_backtrack_megabyte", "kmcp-10-wire", "print('password' + 'a-' * 45000)", runtime_outcome="ok"),
    _a("redaction_backtrack_result", "kmcp-10-wire", "result = ['api_key.' * 5000, 'x-' * 20000]",
       runtime_outcome="ok"),
    _a("redaction_backtrack_error", "kmcp-10-wire", "raise ValueError('secret_token:' + 'a-' * 40000)"),
    _a("deep_result_list", "kmcp-10-wire", "x = 'leaf'\nfor i in range(300):\n    x = [x]\nresult = x",
       runtime_outcome="ok"),
    _a("deep_result_dict", "kmcp-10-wire", "x = 1\nfor i in range(900):\n    x = {'k': x}\nresult = x",
       runtime_outcome="ok"),
    _a("deep_result_past_recursion_limit", "kmcp-10-wire",
       "x = []\nfor i in range(5000):\n    x = [x]\nresult = x", runtime_outcome="ok"),
    _a("cyclic_result", "kmcp-10-wire", "x = []\nx.append(x)\nresult = x"),
    _a("shared_subtree_result", "kmcp-10-wire", "x = []\nfor i in range(40):\n    x = [x, x]\nresult = x",
       runtime_outcome="ok"),
    _a("surrogate_result", "kmcp-10-wire", "result = {chr(0xd800): [chr(0xdfff)], 'v': 'a' + chr(0xdcff)}",
       runtime_outcome="ok"),
    _a("huge_dict_key_result", "kmcp-10-wire", "result = {'k' * 200000: 1}", runtime_outcome="ok"),
    _a("many_keys_result", "kmcp-10-wire", "result = {str(i): i for i in range(100000)}", runtime_outcome="ok"),
    _a("nan_result", "kmcp-10-wire", "result = [float('nan')]"),
    _a("huge_int_result", "kmcp-10-wire", "result = 10 ** 5000"),
    _a("long_non_ascii_exception_name", "kmcp-10-wire",
       "class " + "Ошибка" * 7 + "(Exception):\n    pass\nraise " + "Ошибка" * 7 + "('Ж' * 100000)"),
    _a("long_source_line_traceback", "kmcp-10-wire", "x = [1 / 0, '" + "a" * 50000 + "']"),
)


class Canaries:
    """Secrets and tripwires an attack must not reach: a file, an env var, a TCP port, a path, a process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file_secret = "file-secret-" + secrets.token_hex(8)
        self.env_name = "KMCP_ESCAPE_CANARY"
        self.env_secret = "env-secret-" + secrets.token_hex(8)
        self.secret_file = directory / "secret.txt"
        self.write_path = directory / "pwned"
        self._listener: socket.socket | None = None
        self._accepted: list[object] = []
        self._victim: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Canaries:
        self.secret_file.write_text(self.file_secret + "\n")
        os.environ[self.env_name] = self.env_secret
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        self._victim = subprocess.Popen(["sleep", "600"])
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, address = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._accepted.append(address)
            connection.close()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
        self._thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
        os.environ.pop(self.env_name, None)
        if self._victim is not None and self._victim.poll() is None:
            self._victim.kill()
            self._victim.wait()

    @property
    def victim_pid(self) -> int:
        assert self._victim is not None
        return self._victim.pid

    def render(self, attack: Attack) -> str:
        """The attack's code with the placeholders filled in."""
        return (attack.code.replace("SECRET_FILE", str(self.secret_file)).replace("SECRET_ENV", self.env_name)
                .replace("TCP_PORT", str(self.port)).replace("WRITE_PATH", str(self.write_path))
                .replace("VICTIM_PID", str(self.victim_pid)))

    def tripped(self, *outputs: str) -> list[str]:
        """Which canaries the attack reached: secrets in any output, a connection, a file, a dead victim."""
        text = "\n".join(outputs)
        found = []
        if self.file_secret in text:
            found.append("file")
        if self.env_secret in text:
            found.append("env")
        if self._accepted:
            found.append("tcp")
        if self.write_path.exists():
            found.append("write")
        if self._victim is not None and self._victim.poll() is not None:
            found.append("kill")
        return found
