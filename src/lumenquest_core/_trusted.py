"""Copy-with-changes for frozen attrs objects whose invariants the caller already upholds.

``attrs.evolve`` and the constructors re-run every converter and validator; on hot paths
(a renewal, an invoice state change) the values come from objects that were validated
when they were built, so re-checking them only costs time.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

_T = TypeVar("_T")
_set = object.__setattr__
_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, Any], ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple((f.name, f.default) for f in attrs.fields(cls))
    return fields


_DEFAULTS: dict[type, tuple[dict[str, Any], tuple[tuple[str, Any], ...], frozenset[str]]] = {}


def _defaults(cls: type) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...], frozenset[str]]:
    known = _DEFAULTS.get(cls)
    if known is None:
        fields = _fields(cls)
        plain = {
            name: default
            for name, default in fields
            if default is not attrs.NOTHING and not isinstance(default, attrs.Factory)  # type: ignore[arg-type]
        }
        factories = tuple(
            (name, default.factory)
            for name, default in fields
            if isinstance(default, attrs.Factory)  # type: ignore[arg-type]
        )
        required = frozenset(name for name, default in fields if default is attrs.NOTHING)
        known = _DEFAULTS[cls] = (plain, factories, required)
    return known


def evolve_trusted(instance: _T, **changes: Any) -> _T:
    """Return a copy of ``instance`` with ``changes``, skipping converters and validators."""
    cls = type(instance)
    copy: _T = object.__new__(cls)
    state = getattr(instance, "__dict__", None)
    if state is not None:
        # Dict-backed (slots=False) hot-path classes copy at C speed.
        fresh = copy.__dict__
        fresh.update(state)
        fresh.update(changes)
        return copy
    for name, _ in _fields(cls):
        _set(copy, name, changes[name] if name in changes else getattr(instance, name))
    return copy


def new_trusted(cls: type[_T], **values: Any) -> _T:
    """Build ``cls`` from values already validated together, skipping converters and validators."""
    instance = object.__new__(cls)
    fields = _fields(cls)
    state = getattr(instance, "__dict__", None)
    if state is not None:
        plain, factories, required = _defaults(cls)
        missing = required - values.keys()
        if missing:
            raise TypeError(f"{cls.__name__} needs {', '.join(sorted(missing))}")
        state.update(plain)
        for name, factory in factories:
            if name not in values:
                state[name] = factory()
        state.update(values)
        return instance
    for name, default in fields:
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
