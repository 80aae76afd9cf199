"""Tables with unique and secondary indexes, and the per-transaction overlay over them.

A :class:`Table` holds committed rows. A :class:`View` is one unit of work's window on a
table: writes go to its :class:`Overlay` and reads look there first, so a transaction
costs O(rows it changes), never a copy of the table. :meth:`Table.apply` moves an
overlay into the table on commit. Each row's index keys are computed once, when it is
staged, and kept beside it, so that commit and later updates do not recompute them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from lumenquest_core.errors import Conflict, NotFound

R = TypeVar("R")
KeyOf = Callable[[Any], Hashable | None]
"""A row's value for one index; None keeps the row out of that index."""
Describe = Callable[[Any], tuple[str, Mapping[str, Any]]]
"""The message and details of the Conflict a broken unique constraint raises."""
Keys = tuple[Hashable | None, ...]

_NO_KEYS: Keys = ()


def _compile(key_functions: tuple[KeyOf, ...]) -> Callable[[Any], Keys]:
    """Return one function computing every key of a row (a billing run calls it per write)."""
    match key_functions:
        case ():
            return lambda row: _NO_KEYS
        case (a,):
            return lambda row: (a(row),)
        case (a, b):
            return lambda row: (a(row), b(row))
        case (a, b, c):
            return lambda row: (a(row), b(row), c(row))
        case _:
            return lambda row: tuple([f(row) for f in key_functions])


def _add_keys(
    row_id: str,
    keys: Keys,
    unique_owners: tuple[dict[Hashable, str], ...],
    buckets: tuple[dict[Hashable, dict[str, None]], ...],
) -> None:
    """Enter a row under its keys: unique keys first, then index keys (in ``keys`` order)."""
    n = len(unique_owners)
    for i, key in enumerate(keys):
        if key is None:
            continue
        if i < n:
            unique_owners[i][key] = row_id
        else:
            index = buckets[i - n]
            bucket = index.get(key)
            if bucket is None:
                index[key] = {row_id: None}
            else:
                bucket[row_id] = None


class UniqueIndex:
    """A uniqueness rule: at most one row per non-None key."""

    __slots__ = ("describe", "key_of", "name")

    def __init__(self, name: str, key_of: KeyOf, describe: Describe) -> None:
        self.name = name
        self.key_of = key_of
        self.describe = describe


class Table(Generic[R]):
    """The committed rows of one kind, in commit order, with their indexes."""

    def __init__(
        self,
        kind: str,
        id_of: Callable[[R], str],
        *,
        uniques: Iterable[UniqueIndex] = (),
        indexes: Mapping[str, KeyOf] | None = None,
        ordered_by_id: bool = False,
    ) -> None:
        self.kind = kind
        self.id_of = id_of
        self.uniques = tuple(uniques)
        self.index_names = tuple(indexes or {})
        self.index_keys = tuple((indexes or {}).values())
        self._keys_of = _compile((*(u.key_of for u in self.uniques), *self.index_keys))
        self.rows: dict[str, R] = {}
        # Per row: its unique keys then its index keys, in declaration order.
        self.keys: dict[str, Keys] = {}
        self.unique_owners: tuple[dict[Hashable, str], ...] = tuple({} for _ in self.uniques)
        # Buckets are insertion-ordered dicts used as ordered sets: commit order for free.
        self.buckets: tuple[dict[Hashable, dict[str, None]], ...] = tuple(
            {} for _ in self.index_names
        )
        # Commit order with positions, so that a cursor resumes in O(1).
        self.order: list[str] = []
        self.position: dict[str, int] = {}
        self.sorted_ids: list[str] | None = [] if ordered_by_id else None

    def index_of(self, name: str) -> int:
        """Return the position of a secondary index."""
        return self.index_names.index(name)

    def keys_of(self, row: R) -> Keys:
        """Compute a row's unique keys followed by its index keys."""
        return self._keys_of(row)

    def not_found(self, row_id: str) -> NotFound:
        """Return the error for a missing row."""
        return NotFound(
            f"{self.kind} {row_id!r} not found", details={"kind": self.kind, "id": row_id}
        )

    def duplicate(self, row_id: str) -> Conflict:
        """Return the error for a second row with the same id."""
        return Conflict(
            f"{self.kind} {row_id!r} already exists",
            details={"kind": self.kind, "id": row_id, "constraint": "primary_key"},
        )

    def apply(self, overlay: Overlay[R]) -> list[tuple[R | None, R | None]]:
        """Make an overlay's changes permanent; return each (before, after) pair applied."""
        applied: list[tuple[R | None, R | None]] = []
        rows, keys = self.rows, self.keys
        for row_id in overlay.deleted:
            old = rows.pop(row_id, None)
            if old is not None:
                self._unindex(row_id, keys.pop(row_id))
                del self.position[row_id]
                if self.sorted_ids is not None:
                    del self.sorted_ids[bisect.bisect_left(self.sorted_ids, row_id)]
                applied.append((old, None))
        for row_id, row in overlay.rows.items():
            old = rows.get(row_id)
            new_keys = overlay.keys[row_id]
            if old is not None:
                old_keys = keys[row_id]
                if old_keys != new_keys:
                    self._unindex(row_id, old_keys)
                    self._index(row_id, new_keys, moved=True)
            else:
                self.position[row_id] = len(self.order)
                self.order.append(row_id)
                if self.sorted_ids is not None:
                    bisect.insort(self.sorted_ids, row_id)
                self._index(row_id, new_keys)
            rows[row_id] = row
            keys[row_id] = new_keys
            applied.append((old, row))
        return applied

    def _index(self, row_id: str, keys: Keys, *, moved: bool = False) -> None:
        if not keys:
            return
        if not moved:
            _add_keys(row_id, keys, self.unique_owners, self.buckets)
            return
        n = len(self.uniques)
        for owners, key in zip(self.unique_owners, keys, strict=False):
            if key is not None:
                owners[key] = row_id
        for buckets, key in zip(self.buckets, keys[n:], strict=True):
            if key is not None:
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = {row_id: None}
                elif row_id not in bucket:
                    # An older row joining a bucket: keep the bucket in creation order.
                    buckets[key] = dict.fromkeys(
                        sorted([*bucket, row_id], key=self.position.__getitem__)
                    )

    def _unindex(self, row_id: str, keys: Keys) -> None:
        if not keys:
            return
        n = len(self.uniques)
        for owners, key in zip(self.unique_owners, keys, strict=False):
            # Another row of the same commit may already have taken the key over.
            if key is not None and owners.get(key) == row_id:
                del owners[key]
        for buckets, key in zip(self.buckets, keys[n:], strict=True):
            if key is not None:
                bucket = buckets.get(key)
                if bucket is not None:
                    bucket.pop(row_id, None)
                    if not bucket:
                        del buckets[key]


class Overlay(Generic[R]):
    """One unit of work's uncommitted writes to one table."""

    __slots__ = ("buckets", "deleted", "keys", "new", "rows", "unique_owners")

    def __init__(self, table: Table[R]) -> None:
        self.rows: dict[str, R] = {}
        self.keys: dict[str, Keys] = {}
        self.new: dict[str, None] = {}
        self.deleted: set[str] = set()
        self.unique_owners: tuple[dict[Hashable, str], ...] = tuple({} for _ in table.uniques)
        self.buckets: tuple[dict[Hashable, dict[str, None]], ...] = tuple(
            {} for _ in table.index_names
        )


class View(Generic[R]):
    """A unit of work's window on a table: committed rows under its own uncommitted writes."""

    __slots__ = ("_on_write", "overlay", "table")

    def __init__(self, table: Table[R], on_write: Callable[[View[Any]], None]) -> None:
        self.table = table
        self.overlay: Overlay[R] | None = None
        self._on_write = on_write  # tells the unit of work this table has changes to commit

    # -- reads ------------------------------------------------------------------------

    def find(self, row_id: str) -> R | None:
        """Return the row as this unit of work sees it, or None."""
        overlay = self.overlay
        if overlay is not None:
            row = overlay.rows.get(row_id)
            if row is not None:
                return row
            if row_id in overlay.deleted:
                return None
        return self.table.rows.get(row_id)

    def get(self, row_id: str) -> R:
        """Return the row or raise NotFound."""
        row = self.find(row_id)
        if row is None:
            raise self.table.not_found(row_id)
        return row

    def owner(self, unique: int, key: Hashable) -> str | None:
        """Return the id of the row holding ``key`` in the ``unique``-th unique index."""
        owner = self.table.unique_owners[unique].get(key)
        overlay = self.overlay
        if overlay is None:
            return owner
        staged = overlay.unique_owners[unique].get(key)
        if staged is not None:
            return staged
        if owner is not None:
            if owner in overlay.deleted:
                return None
            changed = overlay.keys.get(owner)
            if changed is not None and changed[unique] != key:
                return None  # this unit of work moved the row off the key
        return owner

    def bucket(self, index: str, key: Hashable, limit: int | None = None) -> list[R]:
        """Return the rows whose ``index`` value is ``key``, in creation order."""
        table = self.table
        position = table.index_of(index)
        committed = table.buckets[position].get(key)
        overlay = self.overlay
        if overlay is None or (not overlay.rows and not overlay.deleted):
            if committed is None:
                return []
            ids: Iterable[str] = committed if limit is None else itertools.islice(committed, limit)
            return [table.rows[i] for i in ids]
        slot = len(table.uniques) + position
        rows: list[R] = []
        moved_in = False
        if committed is not None:
            for row_id in committed:
                if limit is not None and len(rows) >= limit:
                    return rows
                if row_id in overlay.deleted:
                    continue
                keys = overlay.keys.get(row_id)
                if keys is None:
                    rows.append(table.rows[row_id])
                elif keys[slot] == key:
                    rows.append(overlay.rows[row_id])
        for row_id in overlay.buckets[position].get(key, ()):
            if row_id in overlay.new:
                rows.append(overlay.rows[row_id])
            elif committed is None or row_id not in committed:
                rows.append(overlay.rows[row_id])  # an update moved it into this bucket
                moved_in = True
        if moved_in:
            rows.sort(key=lambda row: self.rank(table.id_of(row)))
        return rows if limit is None else rows[:limit]

    def rank(self, row_id: str) -> tuple[int, int]:
        """Return a sort key for creation order: committed rows first, then this unit's."""
        position = self.table.position.get(row_id)
        if position is not None:
            return (0, position)
        if self.overlay is not None and row_id in self.overlay.new:
            return (1, list(self.overlay.new).index(row_id))
        raise self.table.not_found(row_id)

    def scan(self, after: str | None = None) -> Iterator[R]:
        """Yield every row in creation order, strictly after the row ``after`` if given."""
        table = self.table
        start = 0
        staged_start = 0
        if after is not None:
            section, index = self.rank(after)
            if section == 0:
                start = index + 1
            else:
                start, staged_start = len(table.order), index + 1
        order, position = table.order, table.position
        for i in range(start, len(order)):
            row_id = order[i]
            if position.get(row_id) == i:  # skip the slots of deleted rows
                row = self.find(row_id)
                if row is not None:
                    yield row
        if self.overlay is not None:
            for row_id in list(self.overlay.new)[staged_start:]:
                yield self.overlay.rows[row_id]

    def scan_by_id(self, after: str | None = None) -> Iterator[R]:
        """Yield every row in id order, strictly after the id ``after`` if given."""
        sorted_ids = self.table.sorted_ids
        assert sorted_ids is not None, f"{self.table.kind} is not kept in id order"
        start = 0 if after is None else bisect.bisect_right(sorted_ids, after)
        ids: Iterable[str] = itertools.islice(sorted_ids, start, None)
        overlay = self.overlay
        if overlay is not None and overlay.new:
            staged = sorted(i for i in overlay.new if after is None or i > after)
            ids = heapq.merge(ids, staged)
        for row_id in ids:
            row = self.find(row_id)
            if row is not None:
                yield row

    # -- writes -----------------------------------------------------------------------

    def add(self, row: R) -> None:
        """Stage a new row; a taken id or unique key raises Conflict."""
        table = self.table
        row_id = table.id_of(row)
        if self.find(row_id) is not None:
            raise table.duplicate(row_id)
        keys = table.keys_of(row)
        if table.uniques:
            self._check_unique(row_id, row, keys)
        self._stage(row_id, row, keys)

    def update(self, row: R) -> None:
        """Stage a replacement row; a missing id raises NotFound, a taken unique key Conflict."""
        table = self.table
        row_id = table.id_of(row)
        self.get(row_id)
        keys = table.keys_of(row)
        if table.uniques:
            self._check_unique(row_id, row, keys)
        self._stage(row_id, row, keys)

    def upsert(self, row: R) -> None:
        """Stage a row, new or replacing the one with its id."""
        table = self.table
        row_id = table.id_of(row)
        keys = table.keys_of(row)
        if table.uniques:
            self._check_unique(row_id, row, keys)
        self._stage(row_id, row, keys)

    def delete(self, row_id: str) -> None:
        """Stage the removal of a row (a missing id raises NotFound)."""
        self.get(row_id)
        overlay = self._overlay()
        if row_id in overlay.rows:
            del overlay.rows[row_id]
            self._unstage(row_id, overlay.keys.pop(row_id))
        if row_id in overlay.new:
            del overlay.new[row_id]  # never committed: nothing to delete in the table
        else:
            overlay.deleted.add(row_id)

    def _check_unique(self, row_id: str, row: R, keys: Keys) -> None:
        for position, unique in enumerate(self.table.uniques):
            key = keys[position]
            if key is None:
                continue
            owner = self.owner(position, key)
            if owner is not None and owner != row_id:
                raise self._unique_conflict(unique, row_id, row, owner)

    def _unique_conflict(self, unique: UniqueIndex, row_id: str, row: R, owner: str) -> Conflict:
        message, details = unique.describe(row)
        return Conflict(
            message,
            details={
                "kind": self.table.kind,
                "id": row_id,
                "constraint": unique.name,
                "existing_id": owner,
                **details,
            },
        )

    def _overlay(self) -> Overlay[R]:
        overlay = self.overlay
        if overlay is None:
            overlay = self.overlay = Overlay(self.table)
            self._on_write(self)
        return overlay

    def _stage(self, row_id: str, row: R, keys: Keys) -> None:
        # The hottest path of a billing run: kept to plain loops and local lookups.
        overlay = self.overlay
        if overlay is None:
            overlay = self._overlay()
        staged_keys = overlay.keys
        previous = staged_keys.get(row_id)
        if previous is None and row_id not in self.table.rows:
            overlay.new[row_id] = None
        if overlay.deleted:
            overlay.deleted.discard(row_id)
        overlay.rows[row_id] = row
        staged_keys[row_id] = keys
        if not keys or previous == keys:
            return  # unchanged keys keep the row's place in the overlay's buckets
        if previous is not None:
            self._unstage(row_id, previous)
        _add_keys(row_id, keys, overlay.unique_owners, overlay.buckets)

    def _unstage(self, row_id: str, keys: Keys) -> None:
        overlay = self.overlay
        if overlay is None or not keys:
            return
        n = len(self.table.uniques)
        for owners, key in zip(overlay.unique_owners, keys, strict=False):
            if key is not None and owners.get(key) == row_id:
                del owners[key]
        for buckets, key in zip(overlay.buckets, keys[n:], strict=True):
            if key is not None:
                buckets.get(key, {}).pop(row_id, None)

    # -- transaction ------------------------------------------------------------------

    def recheck(self) -> None:
        """Raise Conflict if a commit made since this unit's writes broke one of them.

        Only a unit of work nested in the same thread can commit in between (the store
        lock is re-entrant); this is the check a database runs at commit.
        """
        overlay = self.overlay
        if overlay is None:
            return
        table = self.table
        for row_id, row in overlay.rows.items():
            if row_id in overlay.new and row_id in table.rows:
                raise table.duplicate(row_id)
            keys = overlay.keys[row_id]
            for position, unique in enumerate(table.uniques):
                key = keys[position]
                owner = None if key is None else table.unique_owners[position].get(key)
                if (
                    owner is not None
                    and owner != row_id
                    and owner not in overlay.rows
                    and owner not in overlay.deleted
                ):
                    raise self._unique_conflict(unique, row_id, row, owner)

    def take_overlay(self) -> Overlay[R] | None:
        """Detach and return the uncommitted writes."""
        overlay, self.overlay = self.overlay, None
        return overlay
