"""Vetted stand-ins for the standard-library modules agent code may import.

Contract: user code never holds a real module. ``import json`` gives a ``ModuleProxy`` whose only
attributes are the members listed in ``MODULE_MEMBERS`` (public functions, classes and immutable
constants, reviewed one by one). A module's other attributes lead back to ``sys``, ``os`` and the
real builtins (``datetime.sys``, ``textwrap.re``, ``statistics.sys.modules``, ``re.enum.sys``...),
so nothing is forwarded by default. A proxy has no ``__name__`` either: ``from json import decoder``
must not fall back to ``sys.modules["json.decoder"]`` (CPython's IMPORT_FROM does that for modules).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "ALLOWED_MODULES",
    "JsonValue",
    "json_default",
    "MODULE_MEMBERS",
    "ModuleProxy",
    "guarded_import",
    "module_proxy",
    "preload_modules",
]

logger = logging.getLogger(__name__)

_RE_FLAGS = ("A", "ASCII", "DOTALL", "I", "IGNORECASE", "M", "MULTILINE", "NOFLAG", "S", "U", "UNICODE", "VERBOSE", "X")
_MATH_NAMES = (
    "acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e erf erfc exp "
    "exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf isclose isfinite isinf isnan isqrt "
    "lcm ldexp lgamma log log10 log1p log2 modf nan nextafter perm pi pow prod radians remainder sin sinh "
    "sqrt sumprod tan tanh tau trunc ulp"
).split()

# Members per module. Left out on purpose, with the reason:
#   json.load/dump (file objects), json.JSONDecoder/JSONEncoder (instances expose the decoder's
#     Python internals); functools.update_wrapper/wraps (copy attributes named by strings: a getattr),
#     functools.singledispatch/total_ordering (read and write dunders); string.Formatter (walks
#     "{0.__class__}" fields), string.Template; operator.attrgetter/methodcaller (getattr by string,
#     methodcaller("format") reaches str.format), operator.setitem/delitem/i* (unguarded writes);
#     collections.UserDict & co (only useful as bases); re.Scanner (undocumented); random.SystemRandom.
#   Whole modules left out: typing (get_type_hints evaluates strings), copy/pickle (reduce protocol),
#     sys/os/io/importlib/inspect/gc/ctypes/builtins and anything else not listed here.
MODULE_MEMBERS: Mapping[str, frozenset[str]] = MappingProxyType({
    "bisect": frozenset("bisect bisect_left bisect_right insort insort_left insort_right".split()),
    "collections": frozenset("ChainMap Counter OrderedDict defaultdict deque namedtuple".split()),
    "datetime": frozenset("MAXYEAR MINYEAR UTC date datetime time timedelta timezone tzinfo".split()),
    "difflib": frozenset(
        "Differ IS_CHARACTER_JUNK IS_LINE_JUNK SequenceMatcher context_diff get_close_matches ndiff "
        "unified_diff".split()
    ),
    "fnmatch": frozenset("filter fnmatch fnmatchcase translate".split()),
    "functools": frozenset("cache cmp_to_key lru_cache partial reduce".split()),
    "heapq": frozenset("heapify heappop heappush heappushpop heapreplace merge nlargest nsmallest".split()),
    "itertools": frozenset(
        "accumulate batched chain combinations combinations_with_replacement compress count cycle dropwhile "
        "filterfalse groupby islice pairwise permutations product repeat starmap takewhile tee zip_longest".split()
    ),
    "json": frozenset("JSONDecodeError dumps loads".split()),
    "math": frozenset(_MATH_NAMES),
    "operator": frozenset(
        "abs add and_ concat contains countOf eq floordiv ge gt index indexOf is_ is_not itemgetter le lt mod "
        "mul ne neg not_ or_ pos sub truediv truth xor".split()
    ),
    "random": frozenset(
        "Random choice choices gauss randint random randrange sample seed shuffle uniform".split()
    ),
    "re": frozenset(
        ("Match Pattern compile error escape findall finditer fullmatch match search split sub subn".split())
        + list(_RE_FLAGS)
    ),
    "statistics": frozenset(
        "NormalDist StatisticsError correlation covariance fmean geometric_mean harmonic_mean "
        "linear_regression mean median median_high median_low mode multimode pstdev pvariance quantiles "
        "stdev variance".split()
    ),
    "string": frozenset(
        "ascii_letters ascii_lowercase ascii_uppercase capwords digits hexdigits octdigits printable "
        "punctuation whitespace".split()
    ),
    "textwrap": frozenset("TextWrapper dedent fill indent shorten wrap".split()),
})

ALLOWED_MODULES = frozenset(MODULE_MEMBERS)


class JsonValue:
    """Base of sandbox objects that serialise to JSON as ``to_dict()`` (hits)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, object]:
        raise NotImplementedError


def json_default(value: object) -> object:
    """``json.dumps(default=...)`` hook: hits as their dicts, sets as lists; anything else refused."""
    if isinstance(value, JsonValue):
        return value.to_dict()
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)  # type: ignore[type-var]
        except TypeError:
            return list(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")


def _sandbox_dumps(obj: object, *, default: object = None, **kwargs: object) -> str:
    """json.dumps that also serialises hits (and sets), then the caller's ``default``."""

    def hook(value: object) -> object:
        if isinstance(value, (JsonValue, set, frozenset)):
            return json_default(value)
        if default is not None:
            return default(value)  # type: ignore[operator]
        raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")

    return json.dumps(obj, default=hook, **kwargs)  # type: ignore[arg-type]


# Members replaced by sandbox versions (same name, same call signature).
_OVERRIDES: Mapping[tuple[str, str], object] = MappingProxyType({("json", "dumps"): _sandbox_dumps})

# Constants are shared by every program of a child: only immutable values may be exposed.
_IMMUTABLE_CONSTANT_TYPES = (bool, int, float, complex, str, bytes, tuple, frozenset, type(None))


class ModuleProxy:
    """A read-only namespace holding one module's vetted members, and nothing else.

    Only ``proxy.member`` works: no item access, no iteration, no writes, no ``__name__``.
    """

    __slots__ = ("_module_name", "_members")

    def __init__(self, module_name: str, members: Mapping[str, object]) -> None:
        object.__setattr__(self, "_module_name", module_name)
        object.__setattr__(self, "_members", MappingProxyType(dict(members)))

    def __getattr__(self, name: str) -> object:
        # Reached only for names normal lookup did not find (so never for the two slots).
        members = object.__getattribute__(self, "_members")
        try:
            return members[name]
        except KeyError:
            module_name = object.__getattribute__(self, "_module_name")
            raise AttributeError(
                f"module {module_name!r} has no attribute {name!r} in the sandbox; "
                f"available: {', '.join(sorted(members))}"
            ) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in the sandbox")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self._module_name!r} is read-only in the sandbox")

    def __dir__(self) -> list[str]:
        return sorted(self._members)

    def __repr__(self) -> str:
        return f"<sandbox module {self._module_name!r}>"

    def __reduce__(self) -> None:  # never pickled or copied into something else
        raise TypeError("sandbox modules cannot be copied")

    @property
    def member_names(self) -> frozenset[str]:
        return frozenset(self._members)


def _vet_member(module_name: str, name: str, value: object) -> None:
    """Refuse a listed member that is a module or a mutable shared value (a review mistake)."""
    if isinstance(value, type(re)):
        raise TypeError(f"{module_name}.{name} is a module; it must never be exposed")
    is_callable_or_class = callable(value) or isinstance(value, type)
    if not is_callable_or_class and not isinstance(value, _IMMUTABLE_CONSTANT_TYPES):
        if not isinstance(value, (re.RegexFlag,)) and type(value).__module__ != "datetime":
            raise TypeError(f"{module_name}.{name} is a mutable {type(value).__name__}; expose immutable values only")


@functools.cache
def module_proxy(module_name: str) -> ModuleProxy:
    """The proxy of one allow-listed module (built once per process; it is immutable)."""
    if module_name not in MODULE_MEMBERS:
        raise ImportError(_not_allowed_message(module_name))
    module = importlib.import_module(module_name)
    members: dict[str, object] = {}
    for name in sorted(MODULE_MEMBERS[module_name]):
        if not hasattr(module, name):  # e.g. newer-Python names such as itertools.batched
            continue
        value = _OVERRIDES.get((module_name, name)) or getattr(module, name)
        _vet_member(module_name, name, value)
        members[name] = value
    return ModuleProxy(module_name, members)


def preload_modules() -> None:
    """Import every allow-listed module and build its proxy (the fork server calls this before forking)."""
    for module_name in sorted(ALLOWED_MODULES):
        module_proxy(module_name)


def _not_allowed_message(module_name: str) -> str:
    return (
        f"module {module_name!r} is not available in the sandbox; "
        f"allowed modules: {', '.join(sorted(ALLOWED_MODULES))}"
    )


def guarded_import(
    name: str,
    globals: Mapping[str, object] | None = None,  # noqa: A002 - the signature of builtins.__import__
    locals: Mapping[str, object] | None = None,  # noqa: A002
    fromlist: tuple[str, ...] | list[str] | None = (),
    level: int = 0,
) -> ModuleProxy:
    """``__import__`` for sandboxed code: allow-listed top-level modules only, as proxies."""
    if level != 0:
        raise ImportError("relative imports are not available in the sandbox")
    if not isinstance(name, str) or name not in ALLOWED_MODULES:
        raise ImportError(_not_allowed_message(str(name)))
    proxy = module_proxy(name)
    for item in fromlist or ():
        if not isinstance(item, str) or item not in proxy.member_names:
            raise ImportError(
                f"cannot import {item!r} from {name!r} in the sandbox; "
                f"available: {', '.join(sorted(proxy.member_names))}"
            )
    return proxy
