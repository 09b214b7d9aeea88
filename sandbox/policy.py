"""Compile agent programs: size caps, the AST policy, then RestrictedPython with our own policy.

Runs in the server process before anything forks; bad code never reaches a child.
Contract: ``compile_program`` either returns a ``CompiledProgram`` or raises one ``PolicyError``
carrying every violation found. ``CompiledProgram.to_bytes()`` is marshal: it may only travel
between our own trusted processes (server → fork server → child), never come from the agent.
"""

from __future__ import annotations

import ast
import hashlib
import keyword
import marshal
import sys
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

from sandbox.config import PolicyConfig, SandboxConfig
from sandbox.errors import PolicyError, Violation
from sandbox.modules import ALLOWED_MODULES, MODULE_MEMBERS
from sandbox.guards import SAFE_BUILTIN_NAMES
from sandbox.validate import RULES, is_frame_attribute, skill_violations, validate_source

__all__ = [
    "PROGRAM_FILENAME",
    "CompiledProgram",
    "KnowledgePolicy",
    "compile_program",
    "compile_skill",
    "skill_filename",
    "skill_name",
]

PROGRAM_FILENAME = "<agent>"
_SKILL_PREFIX = "<skill:"
_WIRE_TAG = "knowledge-mcp/compiled-program/1"
_RESTRICTED_HINT = "Rewrite the flagged construct; help() lists what programs may use."


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    """A checked, compiled program ready to run in a child.

    ``mode`` is the policy mode it was compiled under ("full", "restricted_only" or "plain"): a
    restricted program must run with the guarded globals of ``guards.build_globals``.
    """

    code: CodeType = field(repr=False)
    mode: str
    filename: str
    source: str = field(repr=False)
    source_sha256: str

    def global_names(self) -> frozenset[str]:
        """Every global or builtin name the code (nested functions included) may look up or bind.

        Attribute names are not among them: restricted code reads attributes through ``_getattr_``
        with the name as a constant. Used to send a program only the skills it can call.
        """
        names: set[str] = set()
        stack = [self.code]
        while stack:
            code = stack.pop()
            names.update(code.co_names)
            stack.extend(const for const in code.co_consts if isinstance(const, CodeType))
        return frozenset(names)

    def to_bytes(self) -> bytes:
        """Serialise for the fork-server socket (marshal; trusted peers only)."""
        version = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
        return marshal.dumps((_WIRE_TAG, version, self.mode, self.filename, self.source, self.source_sha256,
                              self.code))

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledProgram:
        """Inverse of ``to_bytes``; refuses bytes from another format or Python version."""
        try:
            payload = marshal.loads(data)
        except (EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"not a compiled program: {exc}") from exc
        if not (isinstance(payload, tuple) and len(payload) == 7 and payload[0] == _WIRE_TAG):
            raise ValueError("not a compiled program (unknown wire format)")
        _, version, mode, filename, source, sha, code = payload
        expected = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
        if version != expected:
            raise ValueError(f"compiled program is for {version}, this interpreter is {expected}")
        if not isinstance(code, CodeType):
            raise ValueError("compiled program carries no code object")
        return cls(code=code, mode=mode, filename=filename, source=source, source_sha256=sha)


def skill_filename(name: str) -> str:
    """The pseudo file name a skill's frames carry in tracebacks."""
    return f"{_SKILL_PREFIX}{name}>"


def skill_name(filename: str) -> str | None:
    """The skill a ``skill_filename`` names (None for any other file name)."""
    if filename.startswith(_SKILL_PREFIX) and filename.endswith(">"):
        return filename[len(_SKILL_PREFIX):-1]
    return None


def compile_program(
    source: str, config: PolicyConfig | SandboxConfig, *, filename: str = PROGRAM_FILENAME
) -> CompiledProgram:
    """Check and compile one program; raises ``PolicyError`` with every violation found.

    "full": size caps + AST policy + RestrictedPython; "restricted_only": size cap + RestrictedPython;
    "plain": size cap + builtin compile (tests of the OS layers only).
    """
    policy = config.policy if isinstance(config, SandboxConfig) else config
    if not isinstance(policy, PolicyConfig):
        raise TypeError(f"config must be a PolicyConfig or SandboxConfig, got {type(config).__name__}")
    if not isinstance(source, str):
        raise PolicyError([Violation("syntax", 1, 1, f"the program must be text, got {type(source).__name__}",
                                     RULES["syntax"])])
    if policy.is_ast_checked:
        violations = validate_source(source, policy)
    else:
        violations = _check_size_and_syntax(source, policy, filename)
    if violations:
        raise PolicyError(violations)
    if policy.is_restricted:
        code = _compile_restricted(source, filename)
    else:
        code = _compile_builtin(source, filename)
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return CompiledProgram(code=code, mode=policy.mode, filename=filename, source=source, source_sha256=sha)


def compile_skill(
    name: str, source: str, config: PolicyConfig | SandboxConfig, *, reserved_names: frozenset[str] = frozenset()
) -> CompiledProgram:
    """Compile a skill: one ``def name(...)`` (and a docstring) that runs nothing when it is defined.

    ``reserved_names`` are names no binding of the skill may take (the API names, builtins and
    modules; the caller passes ``api.RESERVED_NAMES``). Raises ``PolicyError`` (rule "skill") for a
    bad name or shape, listing every problem; see ``validate.skill_violations`` for the rules.
    """
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise PolicyError([Violation("skill", 1, 1, f"invalid skill name {name!r}",
                                     "Use a Python identifier that does not start with '_', e.g. find_todos.")])
    if name in reserved_names:
        raise PolicyError([Violation("skill", 1, 1, f"the skill name {name!r} would shadow an API name or builtin",
                                     "Choose another name.")])
    program = compile_program(source, config, filename=skill_filename(name))
    problems = skill_violations(name, ast.parse(source), reserved_names, SAFE_BUILTIN_NAMES)
    if problems:
        raise PolicyError(problems)
    return program


def _check_size_and_syntax(source: str, policy: PolicyConfig, filename: str) -> tuple[Violation, ...]:
    """The checks every mode keeps: the byte cap (protects the server) and a parse."""
    size_bytes = len(source.encode("utf-8", "surrogatepass"))
    if size_bytes > policy.max_code_bytes:
        return (Violation("code-size", 1, 1, f"the program is {size_bytes} bytes; the limit is "
                          f"{policy.max_code_bytes} bytes", RULES["code-size"]),)
    try:
        ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        return (Violation("syntax", exc.lineno or 1, exc.offset or 1, f"syntax error: {exc.msg}", RULES["syntax"]),)
    except (ValueError, UnicodeEncodeError) as exc:
        return (Violation("syntax", 1, 1, f"the program cannot be parsed: {exc}", RULES["syntax"]),)
    except (RecursionError, MemoryError):
        return (Violation("ast-depth", 1, 1, "the program is nested too deeply to parse", RULES["ast-depth"]),)
    return ()


def _compile_builtin(tree_or_source: object, filename: str) -> CodeType:
    try:
        return compile(tree_or_source, filename, "exec", dont_inherit=True)  # type: ignore[call-overload]
    except SyntaxError as exc:
        raise PolicyError([Violation("syntax", exc.lineno or 1, exc.offset or 1, f"syntax error: {exc.msg}",
                                     RULES["syntax"])]) from None
    except (RecursionError, MemoryError):
        raise PolicyError([Violation("ast-depth", 1, 1, "the program is too deeply nested to compile",
                                     RULES["ast-depth"])]) from None


def _compile_restricted(source: str, filename: str) -> CodeType:
    tree = ast.parse(source, filename, "exec")
    policy = KnowledgePolicy(source)
    try:
        tree = policy.visit(tree)
    except RecursionError:
        raise PolicyError([Violation("ast-depth", 1, 1, "the program is too deeply nested to check",
                                     RULES["ast-depth"])]) from None
    if policy.violations:
        raise PolicyError(sorted(policy.violations, key=lambda v: (v.line, v.col)))
    return _compile_builtin(tree, filename)


class KnowledgePolicy(RestrictingNodeTransformer):
    """RestrictedPython's deny-by-default transformer, tightened for knowledge-mcp.

    On top of RestrictedPython: ``__init__`` is the only underscore name and only as a method in a
    class body; frame/code/traceback attributes and ``format``/``format_map`` are refused; keyword
    and ``global`` names are checked; imports must name allow-listed modules and members;
    ``x[k] += v`` and ``obj.a += v`` are rewritten through ``_getitem_``/``_getattr_``/``_write_``.
    """

    def __init__(self, source: str = "") -> None:
        super().__init__()
        self.violations: list[Violation] = []
        self._method_ids: set[int] = set()
        self._lines = source.splitlines()

    def error(self, node: ast.AST, info: str) -> None:
        super().error(node, info)
        line = getattr(node, "lineno", 1) or 1
        col = (getattr(node, "col_offset", 0) or 0) + 1
        self.violations.append(Violation("restricted", line, col, info.rstrip("."), _RESTRICTED_HINT))

    def check_name(self, node: ast.AST, name: str | None, allow_magic_methods: bool = False) -> None:  # type: ignore[override]
        if name == "__init__" and allow_magic_methods and id(node) in self._method_ids:
            return
        super().check_name(node, name, allow_magic_methods=False)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                self._method_ids.add(id(stmt))
        if any(kw.arg != "metaclass" for kw in node.keywords):
            self.error(node, f'class {node.name} may not pass keyword arguments')
        return super().visit_ClassDef(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self._check_attribute_name(node, node.attr)
        return super().visit_Attribute(node)

    def _check_attribute_name(self, node: ast.AST, attr: str) -> None:
        if is_frame_attribute(attr) and attr not in INSPECT_ATTRIBUTES:  # RestrictedPython reports those
            self.error(node, f'"{attr}" is a frame, code or traceback attribute and is not accessible')
        elif attr in ("format", "format_map"):
            self.error(node, f'"{attr}" can walk object attributes; use an f-string')

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None:
            self.check_name(node, node.arg)
        return super().visit_keyword(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return super().visit_Global(node)

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.error(node, f'module "{alias.name}" is not available in the sandbox')
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        module = node.module or ""
        if node.level or module not in ALLOWED_MODULES:
            self.error(node, f'module "{"." * node.level}{module}" is not available in the sandbox')
        else:
            for alias in node.names:
                if alias.name not in MODULE_MEMBERS[module]:
                    self.error(node, f'"{module}.{alias.name}" is not available in the sandbox')
        return super().visit_ImportFrom(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.AST]:
        if isinstance(node.target, ast.Subscript) and not isinstance(node.target.slice, ast.Slice):
            return self._augassign_item(node)
        if isinstance(node.target, ast.Attribute):
            return self._augassign_attribute(node)
        return super().visit_AugAssign(node)

    def _augassign_item(self, node: ast.AugAssign) -> list[ast.AST]:
        """``obj[key] op= value`` → temps, then ``_write_(t)[k] = _inplacevar_(op, _getitem_(t, k), value)``."""
        target = node.target
        assert isinstance(target, ast.Subscript)
        obj_name, key_name = self.gen_tmp_name(), self.gen_tmp_name()
        obj = self.visit(target.value)
        key = self.visit(target.slice)
        value = self.visit(node.value)
        current = _call("_getitem_", [_load(obj_name), _load(key_name)])
        store = ast.Subscript(value=_call("_write_", [_load(obj_name)]), slice=_load(key_name), ctx=ast.Store())
        return self._augassign_statements(node, [(obj_name, obj), (key_name, key)], store, current, value)

    def _augassign_attribute(self, node: ast.AugAssign) -> list[ast.AST]:
        """``obj.attr op= value`` → temp, then ``_write_(t).attr = _inplacevar_(op, _getattr_(t, 'attr'), value)``."""
        target = node.target
        assert isinstance(target, ast.Attribute)
        attr = target.attr
        if attr.startswith("_"):
            self.error(node, f'"{attr}" is an invalid attribute name because it starts with "_"')
        self._check_attribute_name(node, attr)
        obj_name = self.gen_tmp_name()
        obj = self.visit(target.value)
        value = self.visit(node.value)
        current = _call("_getattr_", [_load(obj_name), ast.Constant(attr)])
        store = ast.Attribute(value=_call("_write_", [_load(obj_name)]), attr=attr, ctx=ast.Store())
        return self._augassign_statements(node, [(obj_name, obj)], store, current, value)

    def _augassign_statements(
        self, node: ast.AugAssign, temps: list[tuple[str, ast.expr]], store: ast.expr, current: ast.expr,
        value: ast.expr,
    ) -> list[ast.AST]:
        statements: list[ast.AST] = [ast.Assign(targets=[ast.Name(name, ast.Store())], value=expr)
                                     for name, expr in temps]
        update = _call("_inplacevar_", [ast.Constant(IOPERATOR_TO_STR[type(node.op)]), current, value])
        statements.append(ast.Assign(targets=[store], value=update))
        statements.append(ast.Delete(targets=[ast.Name(name, ast.Del()) for name, _ in temps]))
        for statement in statements:
            copy_locations(statement, node)
        return statements


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _call(func: str, args: list[ast.expr]) -> ast.Call:
    return ast.Call(func=_load(func), args=args, keywords=[])
