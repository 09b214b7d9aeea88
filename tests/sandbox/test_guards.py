"""Runtime guards on their own: called directly with real dangerous objects (as if the compile layers failed)."""

from __future__ import annotations

import builtins
import os
import sys
import types

import pytest

from sandbox.api import SandboxHit
from sandbox.guards import Guards, OutputBuffer, build_globals, is_forbidden_object
from sandbox.modules import ALLOWED_MODULES, ModuleProxy, guarded_import, module_proxy


def _hit() -> SandboxHit:
    return SandboxHit(id="a:1-2", doc_id="a", path="a.py", start_line=1, end_line=2, language="python",
                      title="a", score=1.0, text="x = 1\n")


def _generator():
    yield 1


def test_guard_getattr_refuses_private_names():
    """It refuses every attribute starting with '_' whatever the object."""
    guards = Guards()
    for obj, name in [((), "__class__"), (len, "__self__"), (_generator, "__globals__"), (_hit(), "_x")]:
        with pytest.raises(AttributeError, match="not accessible in the sandbox"):
            guards.getattr(obj, name)


def test_guard_getattr_refuses_frame_and_code_attributes_of_real_generators():
    """It refuses gi_frame / gi_code on a real generator, and f_back on a real frame."""
    guards = Guards()
    generator = _generator()
    for name in ("gi_frame", "gi_code", "gi_yieldfrom"):
        with pytest.raises(AttributeError):
            guards.getattr(generator, name)
    with pytest.raises(AttributeError):
        guards.getattr(sys._getframe(), "f_back")


def test_guard_getattr_refuses_str_format_on_instances_and_the_type():
    """It refuses str.format and format_map on strings, str subclasses and the str type itself."""
    guards = Guards()
    for obj in ("{0.__class__}", str, type("S", (str,), {})("x")):
        for name in ("format", "format_map"):
            with pytest.raises(AttributeError, match="f-string"):
                guards.getattr(obj, name)
    assert guards.getattr("abc", "upper")() == "ABC"


def test_guard_getattr_refuses_any_attribute_of_a_real_module_and_module_results():
    """It never reads an attribute of a real module, nor returns a module found on an attribute."""
    guards = Guards()
    with pytest.raises(AttributeError):
        guards.getattr(os, "system")
    holder = types.SimpleNamespace(mod=os, frame=sys._getframe(), code=_generator.__code__)
    for name in ("mod", "frame", "code"):
        with pytest.raises(AttributeError):
            guards.getattr(holder, name)


def test_guard_getitem_refuses_modules_and_namespace_dicts_as_items():
    """It refuses subscripting a module proxy and items that are modules or a globals dict."""
    guards = Guards()
    with pytest.raises(TypeError):
        guards.getitem(module_proxy("json"), "loads")
    with pytest.raises(TypeError):
        guards.getitem({"m": os}, "m")
    with pytest.raises(TypeError):
        guards.getitem([builtins.__dict__], 0)
    with pytest.raises(TypeError):
        guards.getitem({"g": {"__builtins__": {}, "__name__": "x"}}, "g")
    assert guards.getitem({"k": [1]}, "k") == [1]


def test_guard_getiter_refuses_modules_and_proxies():
    """It refuses iterating a module or a module proxy."""
    guards = Guards()
    for obj in (os, module_proxy("json")):
        with pytest.raises(TypeError):
            guards.getiter(obj)
    assert list(guards.getiter([1, 2])) == [1, 2]


def test_guard_write_allows_own_containers_and_objects_only():
    """It lets programs write their own lists/dicts/sets and class instances, nothing else."""
    guards = Guards()
    for obj in ([], {}, set(), bytearray()):
        assert guards.write(obj) is obj
    Box = guards.make_class("Box", (), {"__module__": "agent", "__qualname__": "Box"})
    box = Box()
    assert guards.write(box) is box and guards.write(Box) is Box
    for obj in (module_proxy("json"), _hit(), len, _generator, os, (1,), "s", str):
        with pytest.raises(TypeError, match="read-only"):
            guards.write(obj)


def test_guard_make_class_refuses_builtin_and_library_bases_and_dunders():
    """It refuses bases other than own classes and builtin exceptions, and dunder members other than __init__."""
    guards = Guards()
    namespace = {"__module__": "agent", "__qualname__": "X"}
    for base in (str, dict, type, module_proxy("json").JSONDecodeError):
        with pytest.raises(TypeError):
            guards.make_class("X", (base,), dict(namespace))
    with pytest.raises(TypeError):
        guards.make_class("X", (), {**namespace, "__eq__": lambda s, o: True})
    with pytest.raises(TypeError):
        guards.make_class("X", (), dict(namespace), metaclass=type)
    error_class = guards.make_class("E", (ValueError,), {**namespace, "__init__": lambda self: None})
    assert issubclass(error_class, ValueError)


def test_guard_inplacevar_applies_operator():
    """It applies the augmented operator and refuses unknown ones."""
    guards = Guards()
    assert guards.inplacevar("+=", 2, 3) == 5
    with pytest.raises(TypeError):
        guards.inplacevar("=", 1, 2)


def test_module_proxy_holds_only_listed_members_and_no_name():
    """It exposes only vetted members: no __name__ (IMPORT_FROM fallback), no module, no writes."""
    proxy = module_proxy("json")
    assert set(dir(proxy)) == {"JSONDecodeError", "dumps", "loads"}
    assert not hasattr(proxy, "__name__") and not hasattr(proxy, "decoder")
    with pytest.raises(AttributeError):
        proxy.loads = None
    for name in ALLOWED_MODULES:
        members = [getattr(module_proxy(name), member) for member in dir(module_proxy(name))]
        assert not any(isinstance(member, types.ModuleType) for member in members), name


def test_module_proxy_json_dumps_serialises_hits():
    """It serialises hits (as the Hit dict) through the sandbox's json.dumps."""
    assert '"path": "a.py"' in module_proxy("json").dumps([_hit()])


def test_guarded_import_allows_listed_modules_only():
    """It returns proxies for allow-listed modules and refuses everything else."""
    assert isinstance(guarded_import("math"), ModuleProxy)
    for name, fromlist, level in [("os", (), 0), ("json", ("decoder",), 0), ("json", (), 1), ("collections.abc", (), 0)]:
        with pytest.raises(ImportError):
            guarded_import(name, None, None, fromlist, level)


def test_is_forbidden_object_recognises_namespaces():
    """It flags modules, frames, code, the builtins dict and globals-shaped dicts."""
    for obj in (os, sys._getframe(), _generator.__code__, builtins.__dict__, {"__builtins__": {}}):
        assert is_forbidden_object(obj)
    assert not is_forbidden_object({"a": 1})


def test_output_buffer_caps_bytes_on_a_character_boundary():
    """It keeps at most cap bytes of UTF-8, never a broken character, and marks the cut."""
    buffer = OutputBuffer(7)
    buffer.write("héllo")
    buffer.write("€€")
    buffer.write("more")
    assert buffer.getvalue() == "héllo" and buffer.truncated
    assert len(buffer.getvalue().encode()) <= 7


def test_build_globals_restricted_builtins_exclude_refused_names():
    """It gives restricted programs the contract's builtins only, and refuses '_' names in the namespace."""
    scope = build_globals({"search": len}, "full", OutputBuffer(10))
    safe = scope["__builtins__"]
    for name in ("open", "eval", "exec", "getattr", "type", "globals", "vars", "compile", "breakpoint", "input"):
        assert name not in safe
    assert safe["__import__"] is guarded_import and scope["search"] is len
    with pytest.raises(ValueError):
        build_globals({"_getattr_": getattr}, "full", OutputBuffer(10))
