"""Copy-with-changes for frozen attrs objects whose invariants the caller already upholds.

``attrs.evolve`` and the constructors re-run every converter and validator; on hot paths
(a renewal, an invoice state change) the values come from objects that were validated
when they were built, so re-checking them only costs time.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

_T = TypeVar("_T")
_new = object.__new__
# Frozen attrs classes refuse ``obj.x = …``; object's own __setattr__ bypasses the guard.
_set = object.__setattr__
_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, Any], ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple((f.name, f.default) for f in attrs.fields(cls))
    return fields


def build_trusted(cls: type[_T], state: dict[str, Any]) -> _T:
    """Return a dict-backed ``cls`` whose ``__dict__`` is ``state``: every field, already valid.

    The fastest way to make a ``slots=False`` object: one dict display at the call site and
    no per-field work here. ``state`` must name every field and is adopted, not copied.
    """
    instance: _T = _new(cls)
    _set(instance, "__dict__", state)
    return instance


def evolve_trusted(instance: _T, **changes: Any) -> _T:
    """Return a copy of ``instance`` with ``changes``, skipping converters and validators."""
    cls = type(instance)
    copy: _T = _new(cls)
    state = getattr(instance, "__dict__", None)
    if state is not None:
        # Dict-backed (slots=False) hot-path classes: dict() clones a plain dict at C speed,
        # and adopting it as __dict__ avoids filling an empty one key by key. Not
        # state.copy(): the __dict__ of an object its constructor built is a split table
        # (keys shared with the class), copy() keeps it split, and Python 3.11 specializes
        # no attribute read of an object with a split __dict__; dict() builds a plain one
        # (run_due over 3,000: see the commit).
        fresh = dict(state)
        fresh.update(changes)
        _set(copy, "__dict__", fresh)
        return copy
    for name, _ in _fields(cls):
        _set(copy, name, changes[name] if name in changes else getattr(instance, name))
    return copy


def new_trusted(cls: type[_T], **values: Any) -> _T:
    """Build ``cls`` from values already validated together, skipping converters and validators."""
    # Hot paths build dict-backed objects with build_trusted; this one serves any class.
    instance = _new(cls)
    for name, default in _fields(cls):
        if name in values:
            value = values[name]
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            value = default.factory()
        elif default is attrs.NOTHING:
            raise TypeError(f"{cls.__name__} needs {name}")
        else:
            value = default
        _set(instance, name, value)
    return instance
