"""The adapter's JSON encoder writes what ``json.dumps`` writes, read-only mappings included."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lumenquest_adapters.sqlalchemy._mapping import json_dumps, json_encoder, read_only_default

_atoms = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_data = st.recursive(
    _atoms,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4).map(MappingProxyType)
        | st.lists(inner, max_size=4).map(tuple)
    ),
    max_leaves=20,
)


@given(_data)
def test_json_dumps_writes_what_the_standard_encoder_writes(value: Any) -> None:
    assert json_dumps(value) == json.dumps(value, default=read_only_default)


@given(_data)
def test_the_sorted_encoder_writes_what_the_standard_one_writes_sorted(value: Any) -> None:
    expected = json.dumps(value, default=read_only_default, sort_keys=True)
    assert json_encoder(sort_keys=True)(value) == expected


def test_the_encoder_is_no_closure_so_psycopg_caches_its_dumper() -> None:
    """psycopg keys its JSON dumpers on the function; a closure gets a new one per value."""
    assert getattr(json_dumps, "__closure__", None) is None
    assert getattr(json_encoder(sort_keys=True), "__closure__", None) is None
