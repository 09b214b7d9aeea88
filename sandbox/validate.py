"""AST pre-check of agent programs: size caps, the allowed syntax, imports, names and attributes.

Pure (no I/O, no state) and run in the server process before anything forks. It collects *every*
violation in source order so the agent can fix a program in one round trip. It is one layer of
several: RestrictedPython and the runtime guards enforce the same rules again on their own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from sandbox.config import PolicyConfig
from sandbox.errors import Violation
from sandbox.modules import ALLOWED_MODULES, MODULE_MEMBERS

__all__ = [
    "FRAME_ATTRIBUTE_PREFIXES",
    "EXCEPT_ONLY_NAMES",
    "REFUSED_ATTRIBUTES",
    "REFUSED_BUILTINS",
    "RULES",
    "is_frame_attribute",
    "skill_violations",
    "validate_source",
]

# Rule ids (stable: tests and agents match on them) and what to do instead.
RULES: dict[str, str] = {
    "code-size": "Send a shorter program: do the heavy lifting with search()/compact() instead of inlining data.",
    "syntax": "Fix the syntax error at the reported position.",
    "ast-depth": "Flatten deeply nested expressions into several statements.",
    "ast-size": "Split the program into smaller programs (state carries values between calls).",
    "forbidden-syntax": "Use the plain constructs listed in help(): def, for/while, comprehensions, try/except.",
    "import": "Import only allow-listed modules: " + ", ".join(sorted(ALLOWED_MODULES)) + ".",
    "underscore-name": "Rename it without the leading underscore (only __init__ may be defined, in a class).",
    "underscore-attribute": "Attributes starting with '_' are private; use the public API (see help()).",
    "forbidden-builtin": "This builtin is not available in the sandbox; see help() for what is.",
    "frame-attribute": "Frames, code objects and tracebacks are not reachable in the sandbox.",
    "format-attribute": "Use an f-string such as f\"{x} {y}\" instead of str.format / format_map.",
    "class-keyword": "Define plain classes: class Name(Base): ...",
    "except-only-name": "Catch it with `except UnicodeError` (or this name) and read its message; never build one.",
}

# Builtins the contract refuses, each with what to use instead.
REFUSED_BUILTINS: dict[str, str] = {
    "open": "use read(path) for indexed files and files(pattern) to list them",
    "exec": "write the code directly in the program",
    "eval": "write the expression directly; json.loads parses data",
    "compile": "write the code directly in the program",
    "getattr": "use obj.name",
    "setattr": "use obj.name = value on your own objects",
    "delattr": "use del obj.name on your own objects",
    "globals": "use the names directly; state holds data between calls",
    "locals": "use the names directly",
    "vars": "use a dict for your data",
    "dir": "use help() to list the API",
    "type": "use isinstance(x, T)",
    "super": "call the base class explicitly or use a function",
    "memoryview": "use bytes",
    "breakpoint": "print() values to debug",
    "input": "programs cannot read input; pass data in the program or in state",
    "id": "use `is` to compare identity",
    "__import__": "use an import statement",
    "exit": "let the program end, or raise an exception",
    "quit": "let the program end, or raise an exception",
}

# Frame, code, generator, coroutine and traceback attributes (and the Python 2 spellings) all
# lead to globals, builtins or code: refused whatever the object is.
FRAME_ATTRIBUTE_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "co_", "f_", "func_", "im_")
# Exception classes whose C fields index raw memory (CPython 3.11 does not bound-check the start
# and end of the Unicode errors when it renders them: cpython issue 123378). Programs may catch
# them by name, nothing more: no call, no alias, no subclass, no isinstance.
EXCEPT_ONLY_NAMES = frozenset({"UnicodeDecodeError", "UnicodeEncodeError", "UnicodeTranslateError"})
# str.format and format_map follow "{0.attr[key]}" field names: attribute access the guards never see.
REFUSED_ATTRIBUTES = frozenset({"format", "format_map"})

# Node types the contract allows; anything else (async, await, match, nonlocal, except*,
# annotated assignments, type aliases and nodes of future Python versions) is refused.
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.Expr, ast.Pass, ast.Break, ast.Continue,
    ast.Assign, ast.AugAssign, ast.Delete, ast.NamedExpr,
    ast.If, ast.For, ast.While, ast.Try, ast.ExceptHandler, ast.Raise, ast.Assert,
    ast.With, ast.withitem, ast.FunctionDef, ast.Lambda, ast.arguments, ast.arg, ast.Return,
    ast.Yield, ast.YieldFrom, ast.Global, ast.ClassDef, ast.Import, ast.ImportFrom, ast.alias,
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.Call, ast.keyword,
    ast.Dict, ast.Set, ast.List, ast.Tuple, ast.Starred, ast.Constant, ast.Name, ast.Attribute,
    ast.Subscript, ast.Slice, ast.JoinedStr, ast.FormattedValue,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop,
)

_SYNTAX_NAMES: dict[str, tuple[str, str]] = {
    "AsyncFunctionDef": ("'async def'", "Use a plain def."),
    "AsyncFor": ("'async for'", "Use a plain for loop."),
    "AsyncWith": ("'async with'", "Use a plain with."),
    "Await": ("'await'", "Call the function directly."),
    "Match": ("a match statement", "Use if/elif."),
    "Nonlocal": ("'nonlocal'", "Return values from the inner function instead."),
    "TryStar": ("'except*'", "Use a plain except."),
    "AnnAssign": ("an annotated assignment", "Drop the annotation: x = value."),
    "TypeAlias": ("a type alias", "Drop the alias."),
}


def is_frame_attribute(name: str) -> bool:
    """True for attribute names of frames, code, generators, coroutines and tracebacks."""
    return name.startswith(FRAME_ATTRIBUTE_PREFIXES)


def validate_source(source: str, config: PolicyConfig | None = None) -> tuple[Violation, ...]:
    """Every rule ``source`` breaks, in source order; an empty tuple means the program may run.

    Columns are 1-based character positions. A program over the size cap or with a syntax error
    yields that single violation (nothing else can be checked reliably).
    """
    config = config or PolicyConfig()
    size_bytes = len(source.encode("utf-8", "surrogatepass"))
    if size_bytes > config.max_code_bytes:
        return (Violation("code-size", 1, 1,
                          f"the program is {size_bytes} bytes; the limit is {config.max_code_bytes} bytes",
                          RULES["code-size"]),)
    try:
        source.encode("utf-8")
        tree = ast.parse(source, "<agent>", "exec")
    except SyntaxError as exc:
        return (_syntax_violation(exc),)
    except UnicodeEncodeError:
        return (Violation("syntax", 1, 1, "the program is not valid UTF-8 text (lone surrogates)", RULES["syntax"]),)
    except ValueError as exc:  # null bytes (Python 3.11 raises ValueError)
        return (Violation("syntax", 1, 1, f"the program cannot be parsed: {exc}", RULES["syntax"]),)
    except (RecursionError, MemoryError):
        return (Violation("ast-depth", 1, 1, "the program is nested too deeply to parse", RULES["ast-depth"]),)
    size_violation = _check_tree_size(tree, config)
    if size_violation is not None:
        return (size_violation,)
    checker = _PolicyChecker(source)
    checker.check(tree)
    return tuple(sorted(checker.violations, key=lambda v: (v.line, v.col, v.rule)))


def _syntax_violation(exc: SyntaxError) -> Violation:
    line = exc.lineno or 1
    col = exc.offset or 1
    snippet = (exc.text or "").strip()
    text = f" ({snippet[:80]!r})" if snippet else ""
    return Violation("syntax", line, col, f"syntax error: {exc.msg}{text}", RULES["syntax"])


def _check_tree_size(tree: ast.AST, config: PolicyConfig) -> Violation | None:
    """Iterative walk (no recursion on hostile input) enforcing the depth and node-count caps."""
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > config.max_ast_nodes:
            return Violation("ast-size", 1, 1, f"the program has more than {config.max_ast_nodes} syntax nodes",
                             RULES["ast-size"])
        if depth > config.max_ast_depth:
            line = getattr(node, "lineno", 1)
            return Violation("ast-depth", line, getattr(node, "col_offset", 0) + 1,
                             f"the program nests deeper than {config.max_ast_depth} levels", RULES["ast-depth"])
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


def _bound_names(tree: ast.AST) -> frozenset[str]:
    """Names the program binds anywhere (assignments, defs, args, imports, except targets...)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global):
            names.update(node.names)
    return frozenset(names)


def _except_type_names(tree: ast.AST) -> set[int]:
    """ids of the Name nodes that form the type of an except clause (``except X`` / ``except (X, Y)``)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            found.update(id(name) for name in names if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Load))
    return found


class _PolicyChecker:
    """One pass over the tree collecting violations; keeps the class-body context for __init__."""

    def __init__(self, source: str) -> None:
        self._lines = source.splitlines()
        self.violations: list[Violation] = []
        self._bound: frozenset[str] = frozenset()
        self._except_type_names: set[int] = set()

    def check(self, tree: ast.Module) -> None:
        self._bound = _bound_names(tree)
        self._except_type_names = _except_type_names(tree)
        for node, in_class_body in self._walk(tree):
            self._check_node(node, in_class_body)

    def _walk(self, tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
        stack: list[tuple[ast.AST, bool]] = [(tree, False)]
        while stack:
            node, in_class_body = stack.pop()
            yield node, in_class_body
            if not isinstance(node, _ALLOWED_NODES):
                continue  # one violation per refused construct, not one per node inside it
            children = list(ast.iter_child_nodes(node))
            is_class = isinstance(node, ast.ClassDef)
            for child in reversed(children):
                stack.append((child, is_class and child in node.body))  # type: ignore[attr-defined]

    def _add(self, node: ast.AST, rule: str, message: str, hint: str | None = None) -> None:
        line = getattr(node, "lineno", 1) or 1
        self.violations.append(Violation(rule, line, self._column(node), message, hint or RULES[rule]))

    def _column(self, node: ast.AST) -> int:
        """1-based character column (ast gives a 0-based UTF-8 byte offset); an attribute points at its name."""
        line = getattr(node, "lineno", None)
        offset = getattr(node, "col_offset", 0) or 0
        if (isinstance(node, ast.Attribute) and node.attr.isascii() and node.end_lineno == line
                and node.end_col_offset is not None):
            offset = max(offset, node.end_col_offset - len(node.attr))
        if line is None or not 0 < line <= len(self._lines):
            return offset + 1
        prefix = self._lines[line - 1].encode("utf-8", "surrogatepass")[:offset]
        return len(prefix.decode("utf-8", "replace")) + 1

    def _check_node(self, node: ast.AST, in_class_body: bool) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            kind = type(node).__name__
            what, instead = _SYNTAX_NAMES.get(kind, (f"the construct {kind}", RULES["forbidden-syntax"]))
            self._add(node, "forbidden-syntax", f"{what} is not allowed in the sandbox", instead)
            return
        if isinstance(node, ast.Name):
            self._check_name(node, node.id)
            if isinstance(node.ctx, ast.Load) and node.id in REFUSED_BUILTINS and node.id not in self._bound:
                self._add(node, "forbidden-builtin", f"the builtin {node.id!r} is not available in the sandbox",
                          f"Instead, {REFUSED_BUILTINS[node.id]}.")
        elif isinstance(node, ast.Attribute):
            self._check_attribute(node)
        elif isinstance(node, ast.FunctionDef):
            if not (in_class_body and node.name == "__init__"):
                self._check_name(node, node.name, is_definition=True)
        elif isinstance(node, ast.ClassDef):
            self._check_name(node, node.name, is_definition=True)
            if node.keywords:
                self._add(node, "class-keyword", f"class {node.name} passes keyword arguments (e.g. metaclass)")
        elif isinstance(node, ast.arg):
            self._check_name(node, node.arg)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            self._check_name(node, node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self._check_name(node, node.name)
        elif isinstance(node, ast.Global):
            for name in node.names:
                self._check_name(node, name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self._check_import(node, alias.name, alias.asname)
        elif isinstance(node, ast.ImportFrom):
            self._check_import_from(node)

    def _check_name(self, node: ast.AST, name: str, *, is_definition: bool = False) -> None:
        if name in EXCEPT_ONLY_NAMES and id(node) not in self._except_type_names:
            self._add(node, "except-only-name", f"{name} may only be named in an except clause in the sandbox")
        if name.startswith("_") and name != "_":
            what = "define" if is_definition else "use"
            extra = " (__init__ is allowed only as a method defined in a class body)" if name.startswith("__") else ""
            self._add(node, "underscore-name", f"cannot {what} the name {name!r}: names starting with '_' are "
                      f"reserved{extra}")

    def _check_attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("_"):
            self._add(node, "underscore-attribute", f"the attribute {attr!r} starts with '_' and is not accessible")
        elif is_frame_attribute(attr):
            self._add(node, "frame-attribute", f"the attribute {attr!r} reaches frames, code or tracebacks",
                      f"{RULES['frame-attribute']} Rename your own attribute if it is not one of those.")
        elif attr in REFUSED_ATTRIBUTES:
            self._add(node, "format-attribute", f"the attribute {attr!r} (str.{attr}) can walk object attributes")

    def _check_import(self, node: ast.AST, module: str, asname: str | None) -> None:
        if module not in ALLOWED_MODULES:
            top = module.split(".")[0]
            detail = (f"submodule {module!r} is not available (import {top!r} and use its listed members)"
                      if top in ALLOWED_MODULES else f"module {module!r} is not available in the sandbox")
            self._add(node, "import", detail)
        if asname:
            self._check_name(node, asname)

    def _check_import_from(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._add(node, "import", "relative imports are not available in the sandbox")
            return
        module = node.module or ""
        if module not in ALLOWED_MODULES:
            self._check_import(node, module, None)
            return
        for alias in node.names:
            if alias.name == "*":
                self._add(node, "import", f"'from {module} import *' is not allowed",
                          f"Import the names you need: from {module} import name1, name2.")
            elif alias.name not in MODULE_MEMBERS[module]:
                self._add(node, "import", f"{module}.{alias.name} is not available in the sandbox",
                          f"Available from {module}: {', '.join(sorted(MODULE_MEMBERS[module]))}.")
            if alias.asname:
                self._check_name(node, alias.asname)


# ---------------------------------------------------------------- skills
#
# Skills are shared by every client of a state dir, so the rules make loading one inert: the module
# is one def (and a docstring), nothing runs when it is defined (no decorator, defaults that are
# literals, annotations of builtin names), and no name it binds anywhere can stand for an API name
# or builtin. The runner then gives each skill its own globals, so it cannot rebind a program's names.

_LITERAL_NODES = (ast.Constant, ast.Tuple, ast.UnaryOp, ast.USub, ast.UAdd, ast.Load)
_ANNOTATION_NODES = (ast.Constant, ast.Name, ast.Subscript, ast.Tuple, ast.BinOp, ast.BitOr, ast.Load)


def skill_violations(name: str, tree: ast.Module, reserved: frozenset[str], builtin_names: frozenset[str]
                     ) -> list[Violation]:
    """What makes ``tree`` not a skill named ``name`` (empty: it is one); see the rules above.

    ``reserved``: names no binding may take (API, builtins, modules); ``builtin_names``: names an
    annotation of the skill's def may use (evaluated when the def runs).
    """
    problems: list[Violation] = []

    def add(node: ast.AST, message: str, hint: str) -> None:
        problems.append(Violation("skill", getattr(node, "lineno", 1) or 1, (getattr(node, "col_offset", 0) or 0) + 1,
                                  message, hint))

    defs = []
    for position, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef):
            defs.append(stmt)
        elif position == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue  # the module docstring
        else:
            add(stmt, "a skill may contain only one function definition at top level (and a docstring)",
                f"Move this statement into def {name}(...); imports go inside the function.")
    if len(defs) != 1 or defs[0].name != name:
        found = ", ".join(d.name for d in defs) or "none"
        add(tree, f"a skill must define exactly one function named {name!r} (found: {found})",
            f"Define def {name}(...): ... and nothing else.")
    for func in defs:  # what runs when the def statement runs: decorators, defaults, annotations
        for decorator in func.decorator_list:
            add(decorator, f"def {func.name} has a decorator; nothing may run when a skill is loaded",
                "Drop the decorator and call the wrapper inside the function.")
        for default in (*func.args.defaults, *(d for d in func.args.kw_defaults if d is not None)):
            if not all(isinstance(node, _LITERAL_NODES) for node in ast.walk(default)):
                add(default, f"a default value of def {func.name} is not a literal; nothing may run when a skill "
                    "is loaded", "Use a constant default (a number, string, True/False/None or a tuple of them) "
                    "or None and compute the value inside the function.")
        args = func.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None and arg.annotation is not None:
                _check_annotation(arg.annotation, builtin_names, add)
        if func.returns is not None:
            _check_annotation(func.returns, builtin_names, add)
    for node in ast.walk(tree):
        for bound, where in _bindings(node):
            if bound in reserved and bound != name:
                add(where, f"the skill binds the name {bound!r}, which is an API name, builtin or module",
                    f"Rename it: a skill may not rebind {bound!r}, even locally (import modules under their "
                    "own name).")
    return sorted(problems, key=lambda v: (v.line, v.col))


def _check_annotation(annotation: ast.expr, builtin_names: frozenset[str], add: object) -> None:
    for node in ast.walk(annotation):
        if not isinstance(node, _ANNOTATION_NODES) or (isinstance(node, ast.Name) and node.id not in builtin_names) \
                or (isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitOr)):
            add(annotation, "an annotation of the skill's def is evaluated when the skill is loaded",  # type: ignore[operator]
                "Use builtin type names only (list[str], int | None) or quote the annotation.")
            return


def _bindings(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """The names ``node`` binds, each with the node to point at; ``import json`` binds json to itself."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        yield node.id, node
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        yield node.name, node
    elif isinstance(node, ast.arg):
        yield node.arg, node
    elif isinstance(node, ast.ExceptHandler) and node.name:
        yield node.name, node
    elif isinstance(node, ast.Global):
        yield from ((bound, node) for bound in node.names)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.asname is not None and alias.asname != alias.name:
                yield alias.asname, node
            elif isinstance(node, ast.ImportFrom):
                yield alias.name, node
