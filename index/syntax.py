"""Definitions of a source file by tree-sitter: what chunk.py cuts on, and the file's symbols.

Contract: `definitions(path, language, text) -> list[Definition] | None` lists the top-level
definitions of a file in line order (namespaces, `export`, `template`, `extern "C"` and preprocessor
blocks are looked through), each with its members when it is a container (class, struct, interface,
trait, impl, enum, module). None means "no grammar for this file" (or the parser failed): the caller
falls back to line windows. Rows are 0-based; `first` includes the doc comments and attributes
directly above the definition (no blank line between), `end` is exclusive. Grammars are the
per-language PyPI wheels (tree-sitter-go, ...), loaded lazily, never downloaded at run time.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

__all__ = ["Definition", "definitions", "SYNTAX_LANGUAGES"]

log = logging.getLogger(__name__)

MIN_CONSTANT_LINES = 3  # a table of constants this long is its own chunk (as for Python)

# language (languages.language_for) -> (grammar module, function); TSX picks its grammar by suffix.
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "kotlin": ("tree_sitter_kotlin", "language"),
    "swift": ("tree_sitter_swift", "language"),
    "scala": ("tree_sitter_scala", "language"),
    "shell": ("tree_sitter_bash", "language"),
}
SYNTAX_LANGUAGES = frozenset(_GRAMMARS) - {"tsx"}

_JS = {
    "function_declaration": "function", "generator_function_declaration": "function",
    "class_declaration": "class", "abstract_class_declaration": "class", "class": "class",
    "interface_declaration": "interface", "type_alias_declaration": "type", "enum_declaration": "enum",
    "method_definition": "method", "internal_module": "module", "module": "module",
}
_C = {"function_definition": "function", "struct_specifier": "struct", "union_specifier": "struct",
      "enum_specifier": "enum", "type_definition": "type"}
_KINDS: dict[str, dict[str, str]] = {
    "python": {"function_definition": "function", "class_definition": "class"},
    "javascript": _JS, "typescript": _JS, "tsx": _JS,
    "go": {"function_declaration": "function", "method_declaration": "method", "type_declaration": "type"},
    "rust": {"function_item": "function", "function_signature_item": "function", "struct_item": "struct",
             "union_item": "struct", "enum_item": "enum", "trait_item": "trait", "impl_item": "impl",
             "type_item": "type", "mod_item": "module", "macro_definition": "function"},
    "java": {"class_declaration": "class", "record_declaration": "class", "interface_declaration": "interface",
             "annotation_type_declaration": "interface", "enum_declaration": "enum",
             "method_declaration": "method", "constructor_declaration": "method", "enum_constant": "class"},
    "c": _C,
    "cpp": {**_C, "class_specifier": "class"},
    "csharp": {"class_declaration": "class", "record_declaration": "class", "struct_declaration": "struct",
               "interface_declaration": "interface", "enum_declaration": "enum", "delegate_declaration": "type",
               "method_declaration": "method", "constructor_declaration": "method", "property_declaration": "method",
               "operator_declaration": "method"},
    "ruby": {"method": "function", "singleton_method": "method", "class": "class", "module": "module"},
    "php": {"function_definition": "function", "class_declaration": "class", "interface_declaration": "interface",
            "trait_declaration": "trait", "enum_declaration": "enum", "method_declaration": "method"},
    "kotlin": {"function_declaration": "function", "class_declaration": "class", "object_declaration": "class",
               "type_alias": "type", "companion_object": "class"},
    "swift": {"function_declaration": "function", "class_declaration": "class", "protocol_declaration": "interface",
              "init_declaration": "method", "typealias_declaration": "type", "protocol_function_declaration": "method"},
    "scala": {"function_definition": "function", "function_declaration": "function", "class_definition": "class",
              "object_definition": "class", "trait_definition": "trait", "enum_definition": "enum",
              "type_definition": "type"},
    "shell": {"function_definition": "function"},
}
# Node types that may be a long table of constants (a top-level declaration with a value).
_CONSTANTS: dict[str, frozenset[str]] = {
    "javascript": frozenset({"lexical_declaration", "variable_declaration"}),
    "go": frozenset({"const_declaration", "var_declaration"}),
    "rust": frozenset({"const_item", "static_item"}),
    "java": frozenset({"field_declaration"}),
    "c": frozenset({"declaration"}),
    "csharp": frozenset({"field_declaration"}),
    "kotlin": frozenset({"property_declaration"}),
    "swift": frozenset({"property_declaration"}),
    "scala": frozenset({"val_definition"}),
    "php": frozenset({"const_declaration"}),
}
for _alias, _base in (("typescript", "javascript"), ("tsx", "javascript"), ("cpp", "c")):
    _CONSTANTS[_alias] = _CONSTANTS[_base]
# Looked through: their children are definitions of the file (True: the node's name prefixes them).
_SCOPES: dict[str, bool] = {
    "namespace_definition": True, "namespace_declaration": True, "file_scoped_namespace_declaration": True,
    "linkage_specification": False, "preproc_ifdef": False, "preproc_if": False, "preproc_else": False,
    "preproc_elif": False, "declaration_list": False, "compound_statement": False,
    # tree-sitter's error recovery: a macro it cannot read (jq's builtin.c) may wrap the rest of a
    # file in one ERROR node whose children are still well-formed definitions.
    "ERROR": False,
}
# One definition wrapped by a node that starts before it (its span and comments are the wrapper's).
_WRAPPERS = frozenset({"export_statement", "template_declaration", "decorated_definition", "ambient_declaration"})
_BODIES = ("class_body", "declaration_list", "field_declaration_list", "body_statement", "template_body",
           "protocol_body", "enum_class_body", "interface_body", "enum_body", "enum_variant_list", "object")
_CONTAINERS = frozenset({"class", "struct", "interface", "trait", "impl", "enum", "module"})
_NAME_TYPES = frozenset({"identifier", "type_identifier", "field_identifier", "simple_identifier", "constant",
                         "name", "property_identifier", "qualified_identifier", "scoped_identifier",
                         "destructor_name", "operator_name", "word", "namespace_identifier", "package_identifier",
                         "scoped_type_identifier", "qualified_name"})
_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_ATTACHED = frozenset({"attribute_item", "attribute_list", "decorator", "annotation", "marker_annotation"})
_WORDS: dict[str, dict[str, str]] = {
    "function": {"python": "def", "go": "func", "rust": "fn", "kotlin": "fun", "swift": "func", "scala": "def", "ruby": "def",
                 "c": "function", "cpp": "function"},
    "interface": {"swift": "protocol"},
    "module": {"csharp": "namespace", "cpp": "namespace", "typescript": "namespace", "tsx": "namespace"},
}
_SPACES = re.compile(r"\s+")
_PY_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


@dataclass
class Definition:
    """One definition: rows are 0-based, `end` exclusive; `first` <= `start` takes in the comments and
    attributes above. `members` is None for a leaf, a list (maybe empty) for a container."""

    kind: str
    name: str
    qualified_name: str
    title: str
    first: int
    start: int
    end: int
    signature: str
    members: list[Definition] | None = None
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def grammar_key(path: str, language: str) -> str | None:
    """The grammar a file is parsed with (None: no grammar)."""
    if language == "typescript" and PurePosixPath(path).suffix.lower() == ".tsx":
        return "tsx"
    return language if language in _GRAMMARS else None


@lru_cache(maxsize=None)
def _parser(key: str) -> Any:
    import tree_sitter

    module, function = _GRAMMARS[key]
    return tree_sitter.Parser(tree_sitter.Language(getattr(importlib.import_module(module), function)()))


def definitions(path: str, language: str, text: str) -> list[Definition] | None:
    """The file's definitions (module docstring); None without a grammar or when parsing fails."""
    key = grammar_key(path, language)
    if key is None:
        return None
    try:
        source = text.encode("utf-8")
        root = _parser(key).parse(source).root_node
        if _unreadable(key, root, len(source)):
            return None
        return _Reader(key, source).scope(root, None)
    except (ImportError, ValueError, RecursionError, MemoryError) as exc:
        log.info("%s: no syntax tree (%s); cut into line windows", path, exc)
        return None


class _Reader:
    def __init__(self, key: str, source: bytes) -> None:
        self.key = key
        self.source = source
        self.kinds = _KINDS[key]
        self.constants = _CONSTANTS.get(key, frozenset())

    def text(self, node: Any) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def scope(self, node: Any, prefix: str | None, owner: str | None = None) -> list[Definition]:
        """The definitions among `node`'s children (scopes looked through, wrappers unwrapped).
        `prefix` qualifies names (namespaces and types); `owner` is the enclosing type's name within
        its namespace (None at namespace level: a function there is a function, not a method)."""
        found: list[Definition] = []
        for child in node.named_children:
            kind = child.type
            if kind in _SCOPES and kind not in self.kinds:
                inner = prefix
                if _SCOPES[kind] and owner is None:
                    name = child.child_by_field_name("name")
                    inner = _join(prefix, _clean(self.text(name))) if name is not None else prefix
                found.extend(self.scope(child.child_by_field_name("body") or child, inner, owner))
                continue
            outer = child
            while child.type in _WRAPPERS:
                inner_child = child.child_by_field_name("declaration") or child.child_by_field_name("definition")
                if inner_child is None:
                    inner_child = next((c for c in reversed(child.named_children) if c.type not in _ATTACHED
                                        and not c.type.endswith("comment")), None)
                if inner_child is None:
                    break
                child = inner_child
            definition = self.definition(child, outer, prefix, owner)
            if definition is not None:
                found.append(definition)
        return found

    def definition(self, node: Any, outer: Any, prefix: str | None, owner: str | None) -> Definition | None:
        kind = self.kinds.get(node.type)
        start, end = outer.start_point.row, _end_row(outer)
        name: str | None = None
        title: str | None = None
        if node.type in ("lexical_declaration", "variable_declaration"):
            kind, name = self._js_declaration(node, end - start)
        elif node.type == "expression_statement" and self.key == "python":
            kind, name = self._python_constant(node, end - start, prefix)
        elif node.type == "expression_statement" and self.key in ("javascript", "typescript", "tsx"):
            kind, name, outside = self._js_assignment(node)
            if kind is not None and outside:
                prefix, owner = _join(prefix, outside), _join(owner, outside)
                title = f"method {_join(owner, name)}"
        elif kind is None and node.type in self.constants:
            has_value = node.type != "declaration" or any(c.type == "init_declarator" for c in node.named_children)
            if end - start >= MIN_CONSTANT_LINES and has_value:  # a C prototype over 3 lines is no table
                kind, name = "constant", self._name(node)
        elif node.type == "type_declaration":  # Go
            spec = next((c for c in node.named_children if c.type in ("type_spec", "type_alias")), None)
            if spec is None:
                return None
            name = self._name(spec)
            shape = spec.child_by_field_name("type")
            kind = {"struct_type": "struct", "interface_type": "interface"}.get(shape.type if shape else "", "type")
        elif node.type == "method_declaration" and self.key == "go":
            receiver = node.child_by_field_name("receiver")
            receiver_type = _last_identifier(receiver, ("type_identifier",)) if receiver is not None else None
            name = self._name(node)
            if receiver_type is not None:
                owner = _clean(self.text(receiver_type))
                prefix = _join(prefix, owner)
        elif node.type == "impl_item":
            of = node.child_by_field_name("type")
            trait = node.child_by_field_name("trait")
            shown = _SPACES.sub(" ", self.text(of)) if of is not None else "?"
            title = f"impl {_SPACES.sub(' ', self.text(trait))} for {shown}" if trait is not None else f"impl {shown}"
            name = re.sub(r"<.*", "", _clean(shown))
        elif node.type == "enum_constant" and node.child_by_field_name("body") is None:
            return None  # a plain constant (`A, B`); one with a class body holds methods (jsoup's states)
        elif node.type in ("struct_specifier", "union_specifier", "enum_specifier", "class_specifier"):
            if node.child_by_field_name("body") is None:
                return None  # a forward declaration or a use, not a definition
        elif node.type == "type_definition":
            shape = node.child_by_field_name("type")
            has_body = shape is not None and shape.child_by_field_name("body") is not None
            kind = {"struct_specifier": "struct", "union_specifier": "struct", "enum_specifier": "enum"}.get(
                shape.type if has_body else "", "type")
            declarator = node.child_by_field_name("declarator")
            name = self._name_of_declarator(declarator) if declarator is not None else None
        elif node.type == "class_declaration" and self.key == "kotlin":
            if any(c.type == "interface" for c in node.children):
                kind = "interface"
        elif node.type == "class_declaration" and self.key == "swift":
            declared = node.child_by_field_name("declaration_kind")
            word = self.text(declared) if declared is not None else "class"
            kind = {"struct": "struct", "enum": "enum", "extension": "impl", "actor": "class"}.get(word, "class")
            if word == "extension":
                extended = next((c for c in node.named_children if c.type in ("user_type", "type_identifier")), None)
                name = _clean(self.text(extended)) if extended is not None else None
                title = f"extension {name}"
        if kind is None:
            return None
        if kind == "function" and owner is not None:
            kind = "method"
        name = name or self._name(node)
        if not name:
            return None
        if "." in name and kind in ("function", "method"):  # C++ `Cache::evict` defined out of its class
            outside, name = name.rsplit(".", 1)
            prefix, owner, kind = _join(prefix, outside), _join(owner, outside), "method"
        qualified = _join(prefix, name)
        if title is None:
            title = self._title(kind, node, _join(owner, name), owner)
        definition = Definition(
            kind=kind, name=name, qualified_name=qualified, title=title, first=self._first_row(outer, start),
            start=start, end=end, signature=self._signature(node), parent=prefix,
        )
        if kind in _CONTAINERS:
            body = self._body(node)
            definition.members = self.scope(body, qualified, _join(owner, name)) if body is not None else []
        return definition

    # ------------------------------------------------------------ pieces

    def _title(self, kind: str, node: Any, qualified: str, owner: str | None) -> str:
        """`func New`, `method Cache.evict` (Go), `LruCache.get` (a member, as for Python), `class LruCache`
        (names within their namespace: the symbol carries the namespace)."""
        if owner is not None and self.key != "go":
            return qualified
        if kind == "method":
            return f"method {qualified}"
        if kind == "constant":
            return f"constant {qualified}"
        word = _WORDS.get(kind, {}).get(self.key, kind)
        if node.type == "object_declaration" or node.type == "object_definition":
            word = "object"
        elif node.type == "module" and self.key == "ruby":
            word = "module"
        return f"{word} {qualified}"

    def _js_declaration(self, node: Any, rows: int) -> tuple[str | None, str | None]:
        declarator = next((c for c in node.named_children if c.type == "variable_declarator"), None)
        if declarator is None:
            return None, None
        name_node = declarator.child_by_field_name("name")
        name = self.text(name_node) if name_node is not None and name_node.type == "identifier" else None
        value = declarator.child_by_field_name("value")
        if value is not None and value.type in _FUNCTION_VALUES:
            return "function", name
        if value is not None and value.type in ("class", "class_expression"):
            return "class", name
        return ("constant", name) if rows >= MIN_CONSTANT_LINES else (None, None)

    def _js_assignment(self, node: Any) -> tuple[str | None, str | None, str | None]:
        """`Foo.prototype.bar = function () {...}`, `res.send = function send() {...}`, `exports.f = ...`:
        a function defined by assignment to a property (kind, name, owner; owner None for `exports.f`
        and `module.exports.f`, which are the module's own functions)."""
        assignment = node.named_children[0] if node.named_child_count == 1 else None
        if assignment is None or assignment.type != "assignment_expression":
            return None, None, None
        left, right = assignment.child_by_field_name("left"), assignment.child_by_field_name("right")
        if left is None or right is None or left.type != "member_expression" or right.type not in _FUNCTION_VALUES:
            return None, None, None
        target, holder = left.child_by_field_name("property"), left.child_by_field_name("object")
        if target is None or holder is None:
            return None, None, None
        parts = [p for p in _clean(self.text(holder)).split(".") if p != "prototype"]
        if not parts or not all(p.isidentifier() for p in parts):
            return None, None, None  # computed (`a[b].c = ...`) or a call result: no stable name
        if parts[0] == "module" and parts[1:2] == ["exports"]:
            parts = parts[2:]
        elif parts[0] == "exports":
            parts = parts[1:]
        if parts == ["module"] and self.text(target) == "exports":
            return None, None, None  # `module.exports = function ...`: the module itself
        owner = ".".join(parts) or None
        return ("method" if owner else "function"), _clean(self.text(target)), owner

    def _python_constant(self, node: Any, rows: int, prefix: str | None) -> tuple[str | None, str | None]:
        """A module-level `NAME = ...` (or `NAME: T = ...`) of MIN_CONSTANT_LINES lines or more, NAME in
        UPPER_CASE: a table whose entries a search matches (as the `ast` chunker did)."""
        if prefix is not None or rows < MIN_CONSTANT_LINES or node.named_child_count != 1:
            return None, None
        assignment = node.named_children[0]
        if assignment.type != "assignment" or assignment.child_by_field_name("right") is None:
            return None, None
        target = assignment.child_by_field_name("left")
        if target is None or target.type != "identifier" or not _PY_CONSTANT.fullmatch(self.text(target)):
            return None, None
        return "constant", self.text(target)

    def _name(self, node: Any) -> str | None:
        named = node.child_by_field_name("name")
        if named is not None:
            return _clean(self.text(named))
        declarator = node.child_by_field_name("declarator")
        if declarator is not None:
            return self._name_of_declarator(declarator)
        for child in node.named_children:
            if child.type in _NAME_TYPES:
                return _clean(self.text(child))
            if child.type in ("const_spec", "var_spec", "variable_declarator", "property_declaration",
                              "variable_declaration", "pattern", "init_declarator", "const_element"):
                return self._name(child)
        return None

    def _name_of_declarator(self, node: Any) -> str | None:
        for _ in range(16):  # pointer_declarator -> function_declarator -> identifier ...
            if node.type in _NAME_TYPES:
                return _clean(self.text(node))
            inner = node.child_by_field_name("declarator") or node.child_by_field_name("name")
            if inner is None:
                inner = next((c for c in node.named_children if c.type in _NAME_TYPES), None)
            if inner is None:
                return None
            node = inner
        return None

    def _body(self, node: Any) -> Any:
        body = node.child_by_field_name("body")
        if body is not None:
            return body
        return next((c for c in node.named_children if c.type in _BODIES), None)

    def _first_row(self, node: Any, start: int) -> int:
        """The row of the first doc comment or attribute directly above `node` (no blank line between)."""
        first = start
        previous = node.prev_named_sibling
        while previous is not None and (previous.type.endswith("comment") or previous.type in _ATTACHED):
            if _end_row(previous) < first:  # a blank line (or code) between: not this definition's
                break
            before = previous.prev_sibling
            if before is not None and _end_row(before) - 1 == previous.start_point.row:
                break  # a comment at the end of a line of code belongs to that code
            first = previous.start_point.row
            previous = previous.prev_named_sibling
        return first

    def _signature(self, node: Any) -> str:
        line = self.source[node.start_byte :].split(b"\n", 1)[0].decode("utf-8", "replace")
        return _SPACES.sub(" ", line).strip()[:120]


def _unreadable(key: str, root: Any, size: int) -> bool:
    """Python with any syntax error (what `ast` refused), or another language where syntax errors span
    more than half the file (macros, templates or a dialect the grammar does not know) and hold no
    definition tree-sitter could still read: windows."""
    if not root.has_error:
        return False
    if key == "python":
        return True
    errors = [child for child in root.children if child.type == "ERROR"]
    broken = sum(child.end_byte - child.start_byte for child in errors)
    if broken * 2 <= size:
        return False
    kinds = _KINDS[key]  # readable after all when the broken span still holds definitions
    return not any(inner.type in kinds for error in errors for inner in error.named_children)


def _end_row(node: Any) -> int:
    """Exclusive end row: a node that ends at column 0 (a trailing newline) ends on the row before."""
    end = node.end_point
    return end.row if end.column == 0 and end.row > node.start_point.row else end.row + 1


def _last_identifier(node: Any, types: tuple[str, ...]) -> Any:
    found = None
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type in types:
            found = found or current
            continue
        stack.extend(reversed(current.named_children))
    return found


def _clean(name: str) -> str:
    """A name as one token: whitespace removed, `::` and `\\` written as `.`."""
    return _SPACES.sub("", name).replace("::", ".").replace("\\", ".").strip(".")


def _join(prefix: str | None, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
