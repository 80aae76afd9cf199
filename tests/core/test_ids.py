"""The default id factory: unguessable ids that sort by the millisecond they were made."""

from __future__ import annotations

import re
import time

from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core import new_id
from lumenquest_core.service import _time_ordered_id

_SHAPE = re.compile(r"sub_[0-9a-f]{32}")
_MILLISECONDS = st.integers(min_value=0, max_value=(1 << 48) - 1)
_ENTROPY = st.binary(min_size=10, max_size=10)


def test_an_id_is_the_prefix_and_32_hex_digits_and_never_repeats() -> None:
    ids = [new_id("sub") for _ in range(2_000)]
    assert all(_SHAPE.fullmatch(made) for made in ids)
    assert len(set(ids)) == len(ids)


def test_an_id_carries_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("sub")
    after = time.time_ns() // 1_000_000
    assert before <= int(made[4:16], 16) <= after


@given(_MILLISECONDS, _MILLISECONDS, _ENTROPY, _ENTROPY)
def test_ids_of_later_milliseconds_sort_after_whatever_their_entropy(
    first: int, second: int, first_entropy: bytes, second_entropy: bytes
) -> None:
    earlier, later = sorted((first, second))
    if earlier == later:
        return
    assert _time_ordered_id("in", earlier, first_entropy) < _time_ordered_id(
        "in", later, second_entropy
    )


@given(_MILLISECONDS, _ENTROPY)
def test_the_last_20_digits_are_the_entropy(milliseconds: int, entropy: bytes) -> None:
    made = _time_ordered_id("evt", milliseconds, entropy)
    assert made == f"evt_{milliseconds:012x}{entropy.hex()}"
    assert bytes.fromhex(made[-20:]) == entropy
