"""The adapter's JSON encoder writes the values ``json.dumps`` writes, read-only mappings included."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lumenquest_adapters.sqlalchemy._mapping import json_dumps, json_encoder, read_only_default

_finite_atoms = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)


def _data(atoms: st.SearchStrategy[Any], *, other_keys: bool = True) -> st.SearchStrategy[Any]:
    keys = st.text() | st.integers() | st.booleans() if other_keys else st.text()
    return st.recursive(
        atoms,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(), inner, max_size=4)
            | st.dictionaries(keys, inner, max_size=4).map(MappingProxyType)
            | st.lists(inner, max_size=4).map(tuple)
            | st.dictionaries(keys, inner, max_size=2)
        ),
        max_leaves=20,
    )


def _canonical(text: str) -> str:
    # The same value written one way: integers stay integers, 1.0 stays a float.
    return json.dumps(json.loads(text), sort_keys=True)


@given(_data(_finite_atoms))
def test_json_dumps_writes_the_value_the_standard_encoder_writes(value: Any) -> None:
    standard = json.dumps(value, default=read_only_default)
    assert _canonical(json_dumps(value)) == _canonical(standard)


@given(_data(_finite_atoms, other_keys=False))
def test_the_sorted_encoder_writes_every_object_with_its_keys_in_order(value: Any) -> None:
    seen: list[list[str]] = []

    def keys_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen.append([name for name, _ in pairs])
        return dict(pairs)

    text = json_encoder(sort_keys=True)(value)
    assert _canonical(text) == _canonical(json.dumps(value, default=read_only_default))
    json.loads(text, object_pairs_hook=keys_of)
    assert all(names == sorted(names) for names in seen)


def test_what_orjson_refuses_is_written_by_the_standard_encoder() -> None:
    """Integers past 64 bits and keys that are not strings: as ``json.dumps`` writes them."""
    for value in (2**70, {1: "one", 2.5: True}, MappingProxyType({None: [-(2**80)]})):
        assert json_dumps(value) == json.dumps(value, default=read_only_default)


@pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC), Decimal("1.5"), {1, 2}])
def test_what_is_not_json_raises_type_error_as_json_dumps_does(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_dumps({"data": value})


def test_a_float_that_is_not_finite_is_written_as_null_which_json_has() -> None:
    assert json.loads(json_dumps([math.nan, math.inf, -math.inf])) == [None, None, None]


def test_the_encoder_is_no_closure_so_psycopg_caches_its_dumper() -> None:
    """psycopg keys its JSON dumpers on the function; a closure gets a new one per value."""
    assert getattr(json_dumps, "__closure__", None) is None
    assert getattr(json_encoder(sort_keys=True), "__closure__", None) is None
