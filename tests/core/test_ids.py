"""The default id factory: unguessable ids that sort by the millisecond they were made."""

from __future__ import annotations

import os
import re
import time

from hypothesis import given
from hypothesis import strategies as st

from lumenquest_core import new_id
from lumenquest_core.service import _time_ordered_id

_SHAPE = re.compile(r"sub_[0-9a-f]{32}")
_MILLISECONDS = st.integers(min_value=0, max_value=(1 << 48) - 1)
_ENTROPY = st.binary(min_size=10, max_size=10).map(bytes.hex)


def test_an_id_is_the_prefix_and_32_hex_digits_and_never_repeats() -> None:
    ids = [new_id("sub") for _ in range(5_000)]  # past one block of drawn entropy
    assert all(_SHAPE.fullmatch(made) for made in ids)
    assert len({made[-20:] for made in ids}) == len(ids)


def test_an_id_carries_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("sub")
    after = time.time_ns() // 1_000_000
    assert before <= int(made[4:16], 16) <= after


@given(_MILLISECONDS, _MILLISECONDS, _ENTROPY, _ENTROPY)
def test_ids_of_later_milliseconds_sort_after_whatever_their_entropy(
    first: int, second: int, first_entropy: str, second_entropy: str
) -> None:
    earlier, later = sorted((first, second))
    if earlier == later:
        return
    assert _time_ordered_id("in", earlier, first_entropy) < _time_ordered_id(
        "in", later, second_entropy
    )


@given(_MILLISECONDS, _ENTROPY)
def test_an_id_is_its_milliseconds_then_its_entropy(milliseconds: int, entropy: str) -> None:
    made = _time_ordered_id("evt", milliseconds, entropy)
    assert made == f"evt_{milliseconds:012x}{entropy}"
    assert int(made[4:16], 16) == milliseconds


def test_a_forked_child_does_not_reuse_the_entropy_its_parent_will_use() -> None:
    new_id("sub")  # the parent holds drawn entropy not yet used
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which coverage does not follow
        os.write(writing, new_id("sub").encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        childs = pipe.read()
    assert _SHAPE.fullmatch(childs)
    assert childs[-20:] != new_id("sub")[-20:]
