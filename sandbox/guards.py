"""Runtime guards for RestrictedPython code and the globals a program runs with.

Contract: in restricted modes every attribute read, item read, iteration, attribute/item write,
augmented assignment, class creation, import and print of user code goes through a function here.
No guard returns a module, frame, code object, traceback, cell or a namespace dict (globals or
builtins), and none reads an attribute of one; writes reach only containers and objects the
program created itself (plus ``state``). One ``Guards`` instance serves one program run.
"""

from __future__ import annotations

import builtins
import collections
import copy
import operator
from collections.abc import Callable, Mapping
from types import (
    AsyncGeneratorType,
    CellType,
    CodeType,
    CoroutineType,
    FrameType,
    ModuleType,
    TracebackType,
)

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from sandbox.modules import JsonValue, ModuleProxy, guarded_import
from sandbox.validate import EXCEPT_ONLY_NAMES, is_frame_attribute

__all__ = [
    "SAFE_BUILTIN_NAMES",
    "Guards",
    "OutputBuffer",
    "build_globals",
    "is_forbidden_object",
]

# The contract's builtins (INTERFACES.md section 4).
_SAFE_FUNCTIONS = (
    "abs all any ascii bin bool bytes callable chr dict divmod enumerate filter float format frozenset hash "
    "hex int isinstance issubclass iter len list map max min next oct ord pow range repr reversed round set "
    "slice sorted str sum tuple zip"
).split()
# Exception classes programs may raise, catch and subclass (BaseException-only ones such as
# SystemExit and KeyboardInterrupt are left out: programs have no business raising them).
_SAFE_EXCEPTIONS = (
    "ArithmeticError AssertionError AttributeError EOFError Exception FileNotFoundError FloatingPointError "
    "ImportError IndexError KeyError LookupError MemoryError ModuleNotFoundError NameError NotImplementedError "
    "OSError OverflowError PermissionError RecursionError RuntimeError StopIteration TimeoutError TypeError "
    "UnboundLocalError UnicodeDecodeError UnicodeEncodeError UnicodeError ValueError ZeroDivisionError"
).split()
_SAFE_CONSTANTS = ("Ellipsis", "NotImplemented", "True", "False", "None")
SAFE_BUILTIN_NAMES = frozenset(_SAFE_FUNCTIONS + _SAFE_EXCEPTIONS + list(_SAFE_CONSTANTS) + ["print"])

# Objects that lead to globals, builtins or code: never handed out, never looked into.
_FORBIDDEN_TYPES = (ModuleType, FrameType, CodeType, TracebackType, CellType, CoroutineType, AsyncGeneratorType)

# Containers a program may write into (it can only obtain fresh ones or its own).
_WRITABLE_TYPES = frozenset({
    list, dict, set, bytearray,
    collections.deque, collections.defaultdict, collections.OrderedDict, collections.Counter,
    collections.ChainMap,
})

# Builtin exceptions whose C fields index raw memory (start/end of the Unicode errors, unchecked
# when CPython 3.11 renders them): a subclass instance would be writable, so none may be defined.
# Audited as safe to subclass: the other exposed exceptions' C members (OSError errno/strerror/
# filename, ImportError name/path, NameError/AttributeError name, AttributeError obj,
# StopIteration value) hold object references that are only ever rendered through str()/repr().
_RAW_MEMORY_EXCEPTIONS = (UnicodeDecodeError, UnicodeEncodeError, UnicodeTranslateError)

# Mutable containers: read from a library class, module member or other shared object, a program
# gets a copy (``_fresh_copy``), so neither ``x[k] = v`` nor ``x.update(...)`` reaches the original.
_MUTABLE_CONTAINERS = (list, dict, set, bytearray, collections.deque)
_COPIED_ON_READ = (*_MUTABLE_CONTAINERS, tuple)  # tuples may hold mutable containers
_COPY_DEPTH = 32  # deeper plain containers inside a shared attribute are copied no further (never seen)

_CLASS_NAMESPACE_DUNDERS = frozenset({"__module__", "__qualname__", "__init__", "__doc__"})

_INPLACE_OPERATORS: dict[str, Callable[[object, object], object]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand,
    "@=": operator.imatmul,
}


def is_forbidden_object(value: object) -> bool:
    """True for modules, frames, code, tracebacks, cells, coroutines and namespace dicts."""
    if isinstance(value, _FORBIDDEN_TYPES):
        return True
    # A globals or builtins dict (reachable only through a bug elsewhere): refuse it by shape.
    return type(value) is dict and (value is builtins.__dict__ or "__builtins__" in value)


def _describe(obj: object) -> str:
    if isinstance(obj, ModuleProxy):
        return repr(obj)
    if isinstance(obj, type):
        return f"class {obj.__name__}"
    return f"a {type(obj).__name__} object"


class OutputBuffer:
    """Collects printed text up to ``cap_bytes`` of UTF-8; beyond that it drops output and sets ``truncated``."""

    __slots__ = ("_cap_bytes", "_parts", "_used_bytes", "truncated")

    def __init__(self, cap_bytes: int) -> None:
        if cap_bytes < 0:
            raise ValueError(f"cap_bytes must be >= 0, got {cap_bytes}")
        self._cap_bytes = cap_bytes
        self._parts: list[str] = []
        self._used_bytes = 0
        self.truncated = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.truncated or not text:
            return len(text)
        room = self._cap_bytes - self._used_bytes
        # A character is at least one byte: only the first `room` characters can ever fit.
        encoded = text[: room + 1].encode("utf-8", "surrogatepass")
        if len(text) <= room and len(encoded) <= room:
            self._parts.append(text)
            self._used_bytes += len(encoded)
        else:
            head = encoded[:room].decode("utf-8", "ignore")  # never split a character
            self._parts.append(head)
            self._used_bytes += len(head.encode("utf-8", "surrogatepass"))
            self.truncated = True
        return len(text)

    def flush(self) -> None:
        """File-like no-op (print(flush=True))."""

    def getvalue(self) -> str:
        return "".join(self._parts)


class _PrintScope:
    """What RestrictedPython's ``_print_`` factory returns: ``print`` calls land in the shared buffer."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: OutputBuffer) -> None:
        self._buffer = buffer

    def _call_print(self, *objects: object, sep: str | None = " ", end: str | None = "\n",
                    file: object = None, flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available in the sandbox; printed text goes to stdout")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print() sep and end must be strings")
        self._buffer.write(sep.join(str(item) for item in objects) + end)

    def __call__(self) -> str:  # RestrictedPython's ``printed``
        return self._buffer.getvalue()


class Guards:
    """The guard functions of one program run (they share the run's user-class registry)."""

    def __init__(self) -> None:
        self._user_classes: set[type] = set()

    # -- reads --------------------------------------------------------------------------------
    def getattr(self, obj: object, name: str) -> object:
        """``obj.name`` for user code (RestrictedPython's ``_getattr_``)."""
        if type(name) is not str:
            raise TypeError("attribute name must be a string")
        if name.startswith("_"):
            raise AttributeError(f"attribute {name!r} of {_describe(obj)} is not accessible in the sandbox "
                                 f"(names starting with '_' are private)")
        if is_frame_attribute(name):
            raise AttributeError(f"attribute {name!r} is not accessible in the sandbox "
                                 f"(frames, code and tracebacks are out of reach)")
        if name in ("format", "format_map") and (
            isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
        ):
            raise AttributeError(f"str.{name} is not available in the sandbox; use an f-string")
        if is_forbidden_object(obj):
            raise AttributeError(f"{_describe(obj)} is not accessible in the sandbox")
        value = getattr(obj, name)
        if is_forbidden_object(value):
            raise AttributeError(f"attribute {name!r} of {_describe(obj)} is not accessible in the sandbox")
        if isinstance(value, _COPIED_ON_READ) and not self._is_own_attribute(obj, name, value):
            return _fresh_copy(value, _COPY_DEPTH)
        return value

    def _is_own_attribute(self, obj: object, name: str, value: object) -> bool:
        """True when ``obj.name`` belongs to the program: its own class or instance, an API result, or
        an instance attribute of a library object it made (``SequenceMatcher(...).b2j``)."""
        if (type(obj) in self._user_classes or isinstance(obj, JsonValue)
                or (isinstance(obj, type) and obj in self._user_classes)):
            return True
        if isinstance(obj, (type, ModuleProxy)):
            return False  # class attributes and module members are shared by every program
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            return False
        return type(own) is dict and own.get(name) is value

    def getitem(self, obj: object, key: object) -> object:
        """``obj[key]`` for user code (``_getitem_``)."""
        if isinstance(obj, ModuleProxy) or is_forbidden_object(obj):
            raise TypeError(f"{_describe(obj)} is not subscriptable in the sandbox")
        value = obj[key]  # type: ignore[index]
        if is_forbidden_object(value):
            raise TypeError(f"this item of {_describe(obj)} is not accessible in the sandbox")
        return value

    def getiter(self, obj: object) -> object:
        """``iter(obj)`` for loops, comprehensions and unpacking (``_getiter_``)."""
        if isinstance(obj, ModuleProxy) or is_forbidden_object(obj):
            raise TypeError(f"{_describe(obj)} is not iterable in the sandbox")
        return iter(obj)  # type: ignore[call-overload]

    # -- writes -------------------------------------------------------------------------------
    def write(self, obj: object) -> object:
        """The target of ``obj.x = v`` / ``obj[k] = v`` / ``del ...`` (``_write_``): own objects only."""
        kind = type(obj)
        if kind in _WRITABLE_TYPES or kind in self._user_classes:
            return obj
        if isinstance(obj, type) and obj in self._user_classes:
            return obj
        raise TypeError(f"cannot modify {_describe(obj)}: it is read-only in the sandbox "
                        f"(only your own lists, dicts, sets, objects and state can be changed; copy it first)")

    def inplacevar(self, op: str, target: object, value: object) -> object:
        """``x op= y`` (``_inplacevar_``)."""
        try:
            function = _INPLACE_OPERATORS[op]
        except KeyError:
            raise TypeError(f"unsupported augmented assignment {op!r}") from None
        return function(target, value)

    @staticmethod
    def apply(function: Callable[..., object], *args: object, **kwargs: object) -> object:
        """``f(*args, **kwargs)`` (``_apply_``)."""
        return function(*args, **kwargs)

    # -- classes ------------------------------------------------------------------------------
    def make_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, object], **kwargs: object) -> type:
        """The metaclass of every class a program defines (``__metaclass__``).

        Bases may be the program's own classes or builtin exception classes: subclassing str, dict,
        library classes or ``type`` would let user methods run inside our code with our arguments.
        """
        if kwargs:
            raise TypeError(f"class {name} may not pass keyword arguments")
        for base in bases:
            is_own = isinstance(base, type) and base in self._user_classes
            is_exception = (isinstance(base, type) and issubclass(base, Exception)
                            and base.__module__ == "builtins" and not issubclass(base, _RAW_MEMORY_EXCEPTIONS))
            if not (is_own or is_exception):
                raise TypeError(f"class {name} may derive only from your own classes or builtin exceptions, "
                                f"not from {_describe(base)}")
        for key in namespace:
            if key.startswith("_") and key not in _CLASS_NAMESPACE_DUNDERS:
                raise TypeError(f"class {name} may not define {key!r}")
        cls = type(name, bases, dict(namespace))
        self._user_classes.add(cls)
        return cls


def _fresh_copy(value: object, depth: int) -> object:
    """A copy of the plain containers in ``value`` (other objects shared as they are)."""
    if depth <= 0:
        return value
    kind = type(value)
    if kind is tuple:
        return tuple(_fresh_copy(item, depth - 1) for item in value)  # type: ignore[attr-defined]
    if not isinstance(value, _MUTABLE_CONTAINERS):
        return value
    copied = copy.copy(value)  # keeps defaultdict factories, OrderedDict order, deque maxlen
    if isinstance(copied, dict):
        for key in copied:
            copied[key] = _fresh_copy(copied[key], depth - 1)
    elif isinstance(copied, list):
        copied[:] = [_fresh_copy(item, depth - 1) for item in copied]
    return copied


def _safe_builtins(guards: Guards, mode: str) -> dict[str, object]:
    names = _SAFE_FUNCTIONS + _SAFE_EXCEPTIONS
    if mode != "full":
        # Only the AST layer keeps these to except clauses (validate.EXCEPT_ONLY_NAMES): without it
        # a program could build one with a negative start and read memory when it is rendered.
        names = [name for name in names if name not in EXCEPT_ONLY_NAMES]
    table: dict[str, object] = {name: getattr(builtins, name) for name in names}
    table.update({"Ellipsis": Ellipsis, "NotImplemented": NotImplemented, "True": True, "False": False,
                  "None": None})
    table["__import__"] = guarded_import
    table["__build_class__"] = builtins.__build_class__  # class statements; our metaclass does the checks
    return table


def _plain_builtins(output: OutputBuffer) -> dict[str, object]:
    """Real builtins (the "plain" test mode: only the OS layers stand), with print captured."""
    table = dict(builtins.__dict__)
    real_print = builtins.print

    def captured_print(*objects: object, **kwargs: object) -> None:
        if kwargs.get("file") is None:
            kwargs["file"] = output
        real_print(*objects, **kwargs)  # type: ignore[call-overload]

    table["print"] = captured_print
    return table


def build_globals(namespace: Mapping[str, object], mode: str, output: OutputBuffer) -> dict[str, object]:
    """The globals of one program run: guards, builtins for ``mode``, then the API ``namespace``.

    ``namespace`` names (API functions, ``state``, skills) may not start with '_' (they would
    replace a guard).
    """
    for name in namespace:
        if not isinstance(name, str) or name.startswith("_"):
            raise ValueError(f"namespace name {name!r} is reserved")
    guards = Guards()
    restricted = mode != "plain"
    scope: dict[str, object] = {
        "__builtins__": _safe_builtins(guards, mode) if restricted else _plain_builtins(output),
        "__name__": "agent",
        "__metaclass__": guards.make_class,
        "_getattr_": guards.getattr,
        "_getitem_": guards.getitem,
        "_getiter_": guards.getiter,
        "_write_": guards.write,
        "_inplacevar_": guards.inplacevar,
        "_apply_": guards.apply,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_print_": lambda _getattr=None: _PrintScope(output),
    }
    scope.update(namespace)
    return scope
