"""Tables with unique and secondary indexes, and the per-transaction overlay over them.

A :class:`Table` holds committed rows. A :class:`View` is one unit of work's window on a
table: writes go to its :class:`Overlay` and reads look there first, so a transaction
costs O(rows it changes), never a copy of the table. :meth:`Table.apply` moves an
overlay into the table on commit.

Unique indexes are kept up to date on every write, because every write must check them.
Secondary indexes are filed lazily: an index holds the rows created before some position
of the commit order, and a query reading it first files the rows created since (each row
once, in creation order, so the work stays O(1) per row and index). A commit only moves
the updated or deleted rows an index already holds; an index no query reads costs
nothing. An overlay indexes its own rows only once a query reads one of its indexes.
Keys are recomputed from rows (which are immutable) rather than stored beside them, so a
stored row costs its dict entries and nothing else.
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
Bucket = str | dict[str, None]
"""The ids under one key of a secondary index, in creation order: a lone id is kept as
the plain string, so that the many single-row buckets cost no container of their own."""


def _bucket_ids(bucket: Bucket | None) -> Iterable[str]:
    """Return the ids of a bucket, in creation order."""
    if bucket is None:
        return ()
    return (bucket,) if isinstance(bucket, str) else bucket


def _append(buckets: dict[Hashable, Bucket], key: Hashable, row_id: str) -> None:
    """File a row created after every row of the bucket at its end."""
    bucket = buckets.get(key)
    if bucket is None:
        buckets[key] = row_id
    elif isinstance(bucket, str):
        if bucket != row_id:
            buckets[key] = {bucket: None, row_id: None}
    else:
        bucket[row_id] = None


def _join(
    buckets: dict[Hashable, Bucket], key: Hashable, row_id: str, position: dict[str, int]
) -> None:
    """File an existing row that moved to ``key``, keeping the bucket in creation order."""
    bucket = buckets.get(key)
    if bucket is None:
        buckets[key] = row_id
        return
    if isinstance(bucket, str):
        if bucket == row_id:
            return
        newest = bucket
    else:
        if row_id in bucket:
            return
        newest = next(reversed(bucket))
    if position[row_id] > position[newest]:
        _append(buckets, key, row_id)
        return
    # An older row joining: the bucket is sorted again into creation order.
    ids = [bucket] if isinstance(bucket, str) else list(bucket)
    ids.append(row_id)
    ids.sort(key=position.__getitem__)
    buckets[key] = dict.fromkeys(ids)


def _drop(buckets: dict[Hashable, Bucket], key: Hashable, row_id: str) -> None:
    """Take a row out of the bucket of ``key`` if it is there."""
    bucket = buckets.get(key)
    if bucket is None:
        return
    if isinstance(bucket, str):
        if bucket == row_id:
            del buckets[key]
    else:
        bucket.pop(row_id, None)
        if len(bucket) == 1:
            buckets[key] = next(iter(bucket))
        elif not bucket:
            del buckets[key]


class UniqueIndex:
    """A uniqueness rule: at most one row per non-None key."""

    __slots__ = ("describe", "key_of", "name")

    def __init__(self, name: str, key_of: KeyOf, describe: Describe) -> None:
        self.name = name
        self.key_of = key_of
        self.describe = describe


class SecondaryIndex:
    """A non-unique index of committed rows, brought up to date when it is read."""

    __slots__ = ("buckets", "filed", "key_of", "name")

    def __init__(self, name: str, key_of: KeyOf) -> None:
        self.name = name
        self.key_of = key_of
        self.buckets: dict[Hashable, Bucket] = {}
        # The rows at positions below this one are filed (under their current key); the
        # rows created since are filed by the next read.
        self.filed = 0


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
        self.unique_keys = tuple(u.key_of for u in self.uniques)
        # The key function of a table's only unique index (every table with a unique key
        # has one), read by the hot paths without a length test and a subscript.
        self.unique_key: KeyOf | None = self.unique_keys[0] if len(self.uniques) == 1 else None
        self.indexes = tuple(SecondaryIndex(n, k) for n, k in (indexes or {}).items())
        self._index_named = {index.name: index for index in self.indexes}
        self.rows: dict[str, R] = {}
        self.unique_owners: tuple[dict[Hashable, str], ...] = tuple({} for _ in self.uniques)
        # Commit order with positions, so that a cursor resumes in O(1); the slot of a
        # deleted row stays in ``order``, with no position pointing at it. Positions are
        # filed lazily, as secondary indexes are: ``position`` holds the rows at slots
        # below ``positioned``, and positions() files the rest before any use. A table
        # only ever read by id (the history tables, through a billing run) files none
        # (run_due over 3,000: see the commit).
        self.order: list[str] = []
        self.position: dict[str, int] = {}
        self.positioned = 0
        self.sorted_ids: list[str] | None = [] if ordered_by_id else None

    def index(self, name: str) -> SecondaryIndex:
        """Return a secondary index by name."""
        return self._index_named[name]

    def positions(self) -> dict[str, int]:
        """Return each committed row's slot in ``order``, filing the rows added since."""
        position, start, end = self.position, self.positioned, len(self.order)
        if start != end:
            # Each row deleted was positioned first (see _remove): the slots since hold
            # live rows only, each id once.
            position.update(zip(self.order[start:], range(start, end), strict=True))
            self.positioned = end
        return position

    def lookup(self, index: SecondaryIndex, key: Hashable) -> Bucket | None:
        """Return the committed ids under ``key``, in creation order."""
        if index.filed != len(self.order):
            self._catch_up(index)
        return index.buckets.get(key)

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

    def apply(self, overlay: Overlay[R]) -> bool:
        """Make an overlay's changes permanent; return whether any row changed."""
        changed = bool(overlay.deleted) and self._remove(overlay.deleted)
        staged = overlay.rows
        if not staged:
            return changed
        new = overlay.new
        if len(new) < len(staged):  # some rows are updates
            filed = [index for index in self.indexes if index.filed]
            if filed or self.uniques:
                self._replace(overlay, filed)
        for owners, staged_owners in zip(self.unique_owners, overlay.unique_owners, strict=True):
            owners.update(staged_owners)
        self.rows.update(staged)
        if new:
            self._created(new)
        return True

    def extend(self, new: dict[str, R]) -> None:
        """Add rows created after every committed one, their ids checked new by the caller."""
        self.rows.update(new)
        self._created(new)

    def _created(self, new: Iterable[str]) -> None:
        """Put new rows' ids at the end of the commit order (and in id order if kept)."""
        self.order.extend(new)  # positioned when first needed (see positions)
        sorted_ids = self.sorted_ids
        if sorted_ids is not None:
            ids = list(new)
            if len(ids) < 8:
                for row_id in ids:
                    bisect.insort(sorted_ids, row_id)
            else:
                sorted_ids.extend(ids)
                sorted_ids.sort()  # a run appended to a sorted list: linear for timsort

    def _replace(self, overlay: Overlay[R], filed: list[SecondaryIndex]) -> None:
        """Take the unique keys the updated rows give up, and move them in filed indexes."""
        rows, new = self.rows, overlay.new
        position = self.positions() if filed else self.position
        uniques = tuple(
            zip(self.unique_owners, self.unique_keys, overlay.unique_owners, strict=True)
        )
        for row_id, row in overlay.rows.items():
            if row_id in new:
                continue
            before = rows[row_id]
            for owners, key_of, staged in uniques:
                key = key_of(before)
                # Unless the row kept the key, or another row of the commit took it.
                if key is not None and staged.get(key) != row_id and owners.get(key) == row_id:
                    del owners[key]
            if filed:
                at = position[row_id]
                for index in filed:
                    if index.filed > at:
                        old_key = index.key_of(before)
                        key = index.key_of(row)
                        if old_key != key:
                            if old_key is not None:
                                _drop(index.buckets, old_key, row_id)
                            if key is not None:
                                _join(index.buckets, key, row_id, position)

    def _catch_up(self, index: SecondaryIndex) -> None:
        """File the rows created since the index was last read, in creation order."""
        order, position, rows = self.order, self.positions(), self.rows
        key_of, buckets = index.key_of, index.buckets
        for i in range(index.filed, len(order)):
            row_id = order[i]
            if position.get(row_id) != i:
                continue  # the slot of a deleted row
            key = key_of(rows[row_id])
            if key is None:
                continue
            bucket = buckets.get(key)  # _append, inlined: this loop runs per created row
            if bucket is None:
                buckets[key] = row_id
            elif isinstance(bucket, str):
                buckets[key] = {bucket: None, row_id: None}
            else:
                bucket[row_id] = None
        index.filed = len(order)

    def _remove(self, deleted: Iterable[str]) -> bool:
        """Delete committed rows from the table and every index."""
        # Positioned first: a deleted row's slot is then never filed (see positions).
        rows, position, sorted_ids = self.rows, self.positions(), self.sorted_ids
        removed = False
        for row_id in deleted:
            old = rows.pop(row_id, None)
            if old is None:
                continue
            removed = True
            for owners, key_of in zip(self.unique_owners, self.unique_keys, strict=True):
                key = key_of(old)
                if key is not None and owners.get(key) == row_id:
                    del owners[key]
            at = position.pop(row_id)
            for index in self.indexes:
                if index.filed > at:
                    key = index.key_of(old)
                    if key is not None:
                        _drop(index.buckets, key, row_id)
            if sorted_ids is not None:
                del sorted_ids[bisect.bisect_left(sorted_ids, row_id)]
        return removed


class _StagedIndex:
    """One secondary index over an overlay's rows, built when a query first reads it."""

    __slots__ = ("buckets", "filed", "seen")

    def __init__(self) -> None:
        self.buckets: dict[Hashable, dict[str, None]] = {}
        self.filed: dict[str, Hashable] = {}  # each staged row's key, when not None
        self.seen = 0  # how many entries of the overlay's log it has applied


class Overlay(Generic[R]):
    """One unit of work's uncommitted writes to one table."""

    __slots__ = (
        "counter",
        "deleted",
        "indexes",
        "log",
        "new",
        "rows",
        "unique_owners",
    )

    def __init__(self, table: Table[R]) -> None:
        self.rows: dict[str, R] = {}
        # New rows, each with a number rising in creation order (its rank in this unit).
        self.new: dict[str, int] = {}
        self.counter = itertools.count()
        self.deleted: set[str] = set()
        # Each staged row's unique keys (None keys left out).
        self.unique_owners: tuple[dict[Hashable, str], ...] = tuple({} for _ in table.uniques)
        # Ids written since the first read of a staged index (None until then).
        self.log: list[str] | None = None
        self.indexes: dict[str, _StagedIndex] = {}


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
            if overlay.deleted and row_id in overlay.deleted:
                return None
        return self.table.rows.get(row_id)

    def get(self, row_id: str) -> R:
        """Return the row or raise NotFound."""
        # find(), inlined: a renewal reads six rows by id (with the other small inlines of
        # the same change, run_due over 3,000: 2,445 -> 2,424 million instructions).
        overlay = self.overlay
        if overlay is not None:
            row = overlay.rows.get(row_id)
            if row is not None:
                return row
            if overlay.deleted and row_id in overlay.deleted:
                raise self.table.not_found(row_id)
        row = self.table.rows.get(row_id)
        if row is None:
            raise self.table.not_found(row_id)
        return row

    def owner(self, unique: int, key: Hashable) -> str | None:
        """Return the id of the row holding ``key`` in the ``unique``-th unique index."""
        table = self.table
        owner = table.unique_owners[unique].get(key)
        overlay = self.overlay
        if overlay is None:
            return owner
        staged = overlay.unique_owners[unique].get(key)
        if staged is not None:
            return staged
        if owner is not None:
            if owner in overlay.deleted:
                return None
            changed = overlay.rows.get(owner)
            if changed is not None and table.unique_keys[unique](changed) != key:
                return None  # this unit of work moved the row off the key
        return owner

    def bucket(self, index: str, key: Hashable, limit: int | None = None) -> list[R]:
        """Return the rows whose ``index`` value is ``key``, in creation order."""
        table = self.table
        secondary = table.index(index)
        committed = table.lookup(secondary, key)
        overlay = self.overlay
        if overlay is None or (not overlay.rows and not overlay.deleted):
            if committed is None or limit == 0:
                return []
            if isinstance(committed, str):
                return [table.rows[committed]]
            ids: Iterable[str] = committed if limit is None else itertools.islice(committed, limit)
            return [table.rows[i] for i in ids]
        staged = self._staged_bucket(overlay, secondary, key)
        committed_ids = _bucket_ids(committed)
        new, staged_rows = overlay.new, overlay.rows
        added = [i for i in staged if i in new]
        moved_in = [i for i in staged if i not in new and i not in committed_ids]
        rows: list[R] = []
        for row_id in committed_ids:
            if limit is not None and not moved_in and len(rows) >= limit:
                return rows
            if row_id in overlay.deleted:
                continue
            row = staged_rows.get(row_id)
            if row is None:
                rows.append(table.rows[row_id])
            elif row_id in staged:  # the staged version still has the key
                rows.append(row)
        rows.extend(staged_rows[i] for i in moved_in)
        if moved_in:
            position = table.positions()
            rows.sort(key=lambda row: position[table.id_of(row)])
        if len(added) > 1:
            added.sort(key=new.__getitem__)
        rows.extend(staged_rows[i] for i in added)
        return rows if limit is None else rows[:limit]

    def _staged_bucket(
        self, overlay: Overlay[R], index: SecondaryIndex, key: Hashable
    ) -> dict[str, None]:
        """Return the ids of the overlay's rows whose ``index`` value is ``key``."""
        log = overlay.log
        if log is None:
            log = overlay.log = list(overlay.rows)
        staged = overlay.indexes.get(index.name)
        if staged is None:
            staged = overlay.indexes[index.name] = _StagedIndex()
        if staged.seen < len(log):
            rows, key_of, buckets, filed = overlay.rows, index.key_of, staged.buckets, staged.filed
            for i in range(staged.seen, len(log)):
                row_id = log[i]
                row = rows.get(row_id)
                new_key = None if row is None else key_of(row)
                old_key = filed.get(row_id)
                if new_key == old_key:
                    continue
                if old_key is not None:
                    bucket = buckets[old_key]
                    del bucket[row_id]
                    if not bucket:
                        del buckets[old_key]
                if new_key is None:
                    del filed[row_id]
                else:
                    filed[row_id] = new_key
                    buckets.setdefault(new_key, {})[row_id] = None
            staged.seen = len(log)
        return staged.buckets.get(key) or {}

    def rank(self, row_id: str) -> tuple[int, int]:
        """Return a sort key for creation order: committed rows first, then this unit's."""
        position = self.table.positions().get(row_id)
        if position is not None:
            return (0, position)
        if self.overlay is not None:
            number = self.overlay.new.get(row_id)
            if number is not None:
                return (1, number)
        raise self.table.not_found(row_id)

    def scan(self, after: str | None = None) -> Iterator[R]:
        """Yield every row in creation order, strictly after the row ``after`` if given."""
        table = self.table
        start = 0
        staged_after = -1
        if after is not None:
            section, index = self.rank(after)
            if section == 0:
                start = index + 1
            else:
                start, staged_after = len(table.order), index
        order, position = table.order, table.positions()
        for i in range(start, len(order)):
            row_id = order[i]
            if position.get(row_id) == i:  # skip the slots of deleted rows
                row = self.find(row_id)
                if row is not None:
                    yield row
        if self.overlay is not None:
            rows = self.overlay.rows
            for row_id, number in list(self.overlay.new.items()):
                if number > staged_after:
                    yield rows[row_id]

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
    # The hottest paths of a billing run: kept to plain branches and local lookups.

    def add(self, row: R, row_id: str | None = None) -> None:
        """Stage a new row; a taken id or unique key raises Conflict.

        ``row_id``: the row's id when the caller has it (a table of two row shapes reads
        it with a Python function).
        """
        table = self.table
        if row_id is None:
            row_id = table.id_of(row)
        overlay = self.overlay
        if overlay is None:
            if row_id in table.rows:
                raise table.duplicate(row_id)
            overlay = self._overlay()
        elif row_id in overlay.rows or (row_id in table.rows and row_id not in overlay.deleted):
            raise table.duplicate(row_id)
        key_of = table.unique_key
        if key_of is not None:
            # _claim()'s common case inlined, a key no other row holds (or none): a renewal
            # adds two rows with one and updates two (run_due over 3,000: see the commit).
            # The test: no row but this one holds the key, staged (first) or committed.
            key = key_of(row)
            if key is not None:
                staged = overlay.unique_owners[0]
                if (staged.get(key) or table.unique_owners[0].get(key) or row_id) == row_id:
                    staged[key] = row_id
                else:
                    self._claim(overlay, row_id, row, None)  # raises, unless the owner left it
        elif table.uniques:
            self._claim_each(overlay, row_id, row, None)
        overlay.rows[row_id] = row
        if overlay.deleted and row_id in overlay.deleted:
            overlay.deleted.discard(row_id)  # deleted then added again: an update
        else:
            overlay.new[row_id] = next(overlay.counter)
        if overlay.log is not None:
            overlay.log.append(row_id)

    def update(self, row: R, row_id: str | None = None) -> None:
        """Stage a replacement row; a missing id raises NotFound, a taken unique key Conflict.

        ``row_id``: as for :meth:`add`.
        """
        table = self.table
        if row_id is None:
            row_id = table.id_of(row)
        overlay = self.overlay
        if overlay is None:
            if row_id not in table.rows:
                raise table.not_found(row_id)
            overlay = self._overlay()
            previous = None
        else:
            previous = overlay.rows.get(row_id)
            if previous is None and (row_id not in table.rows or row_id in overlay.deleted):
                raise table.not_found(row_id)
        key_of = table.unique_key
        if key_of is not None:
            # As in add: the common case, a row updated once, keeping its key (the table's
            # owner is the row itself) or taking a free one.
            key = key_of(row)
            staged = overlay.unique_owners[0]
            if (
                previous is None
                and key is not None
                and (staged.get(key) or table.unique_owners[0].get(key) or row_id) == row_id
            ):
                staged[key] = row_id
            elif key is not None or previous is not None:
                self._claim(overlay, row_id, row, previous)
        elif table.uniques:
            self._claim_each(overlay, row_id, row, previous)
        overlay.rows[row_id] = row
        if overlay.log is not None:
            overlay.log.append(row_id)

    def upsert(self, row: R) -> None:
        """Stage a row, new or replacing the one with its id."""
        table = self.table
        row_id = table.id_of(row)
        overlay = self._overlay()
        previous = overlay.rows.get(row_id)
        if table.uniques:
            self._claim(overlay, row_id, row, previous)
        overlay.rows[row_id] = row
        if previous is None:
            if row_id in overlay.deleted:
                overlay.deleted.discard(row_id)
            elif row_id not in table.rows:
                overlay.new[row_id] = next(overlay.counter)
        if overlay.log is not None:
            overlay.log.append(row_id)

    def delete(self, row_id: str) -> None:
        """Stage the removal of a row (a missing id raises NotFound)."""
        self.get(row_id)
        overlay = self._overlay()
        previous = overlay.rows.pop(row_id, None)
        if previous is not None and self.table.uniques:
            self._release(overlay, row_id, previous)
        if row_id in overlay.new:
            del overlay.new[row_id]  # never committed: nothing to delete in the table
        else:
            overlay.deleted.add(row_id)
        if overlay.log is not None:
            overlay.log.append(row_id)

    def _claim(self, overlay: Overlay[R], row_id: str, row: R, previous: R | None) -> None:
        """Check ``row``'s unique keys, then record them as staged (``previous``'s released)."""
        table = self.table
        key_of = table.unique_key
        if key_of is not None:  # every table with a unique key has one: no loops
            key = key_of(row)
            staged = overlay.unique_owners[0]
            if key is not None:
                # owner(), inlined with its staged lookup shared: a renewal claims four
                # keys (run_due over 3,000: 2,590 -> 2,573 million instructions).
                owner = staged.get(key)
                if owner is None:
                    owner = table.unique_owners[0].get(key)
                    if owner is not None and owner != row_id:
                        if owner in overlay.deleted:
                            owner = None
                        else:
                            changed = overlay.rows.get(owner)
                            if changed is not None and key_of(changed) != key:
                                owner = None  # this unit of work moved the row off the key
                if owner is not None and owner != row_id:
                    raise self._unique_conflict(table.uniques[0], row_id, row, owner)
            if previous is not None:
                old = key_of(previous)
                if old is not None and old != key and staged.get(old) == row_id:
                    del staged[old]
            if key is not None:
                staged[key] = row_id
            return
        self._claim_each(overlay, row_id, row, previous)

    def _claim_each(self, overlay: Overlay[R], row_id: str, row: R, previous: R | None) -> None:
        """Claim the keys of a table with several unique indexes, as :meth:`_claim` does."""
        table = self.table
        keys = [key_of(row) for key_of in table.unique_keys]
        for position, key in enumerate(keys):
            if key is not None:
                owner = self.owner(position, key)
                if owner is not None and owner != row_id:
                    raise self._unique_conflict(table.uniques[position], row_id, row, owner)
        if previous is not None:
            self._release(overlay, row_id, previous)
        for owners, key in zip(overlay.unique_owners, keys, strict=True):
            if key is not None:
                owners[key] = row_id

    def _release(self, overlay: Overlay[R], row_id: str, previous: R) -> None:
        for owners, key_of in zip(overlay.unique_owners, self.table.unique_keys, strict=True):
            key = key_of(previous)
            if key is not None and owners.get(key) == row_id:
                del owners[key]

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
            if row_id in overlay.new:
                if row_id in table.rows:
                    raise table.duplicate(row_id)
            elif row_id not in table.rows:
                # The nested commit deleted a row this unit updates: it is created again.
                overlay.new[row_id] = next(overlay.counter)
            for position, unique in enumerate(table.uniques):
                key = unique.key_of(row)
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

    def take_appended(self) -> dict[str, R] | None:
        """Detach and return the rows staged by ``append`` (see :class:`AppendView`)."""
        return None


class AppendView(View[R]):
    """A view of an append-mostly table with no unique key: the history tables.

    A billing run only adds rows to these (eight a renewal) and never reads them back in
    the same transaction. :meth:`append` stages a new row as one entry of ``appended``,
    where :meth:`View.add` filed it in the overlay with its creation rank; the commit
    moves them to the table in one go (:meth:`Table.extend`). Any other operation first
    files the appended rows into the overlay as ``add`` would have, then runs as a
    View's: what the view holds and shows is the same either way. Appended rows are
    always the newest (``appended`` is empty while there is an overlay), so the commit
    applies the overlay first and then extends the table with them.
    """

    __slots__ = ("appended",)

    def __init__(self, table: Table[R], on_write: Callable[[View[Any]], None]) -> None:
        assert not table.uniques, "an AppendView checks ids only"
        super().__init__(table, on_write)
        self.appended: dict[str, R] = {}

    def append(self, row: R, row_id: str) -> None:
        """Stage a new row: :meth:`View.add`'s checks and outcome, at less cost."""
        if self.overlay is not None:
            View.add(self, row, row_id)
            return
        appended = self.appended
        if row_id in appended or row_id in self.table.rows:
            raise self.table.duplicate(row_id)
        if not appended:
            self._on_write(self)  # once: the overlay a flush makes is not reported again
        appended[row_id] = row

    def _flush(self) -> None:
        """File the appended rows into a new overlay, as ``add`` would have one by one."""
        appended, self.appended = self.appended, {}
        overlay = self.overlay = Overlay(self.table)
        overlay.rows.update(appended)
        overlay.new.update(zip(appended, overlay.counter, strict=False))  # the count is endless

    def take_appended(self) -> dict[str, R] | None:
        """Detach and return the rows staged by ``append``."""
        appended = self.appended
        if not appended:
            return None
        self.appended = {}
        return appended

    def recheck(self) -> None:
        """Raise Conflict if a commit made since took an id this unit appended."""
        rows = self.table.rows
        for row_id in self.appended:
            if row_id in rows:
                raise self.table.duplicate(row_id)
        View.recheck(self)

    # Every other operation: the appended rows filed into the overlay first.

    def find(self, row_id: str) -> R | None:
        """Return the row as this unit of work sees it, or None."""
        if self.appended:
            self._flush()
        return View.find(self, row_id)

    def get(self, row_id: str) -> R:
        """Return the row or raise NotFound."""
        if self.appended:
            self._flush()
        return View.get(self, row_id)

    def owner(self, unique: int, key: Hashable) -> str | None:
        """Return the id of the row holding ``key`` in the ``unique``-th unique index."""
        if self.appended:
            self._flush()
        return View.owner(self, unique, key)

    def bucket(self, index: str, key: Hashable, limit: int | None = None) -> list[R]:
        """Return the rows whose ``index`` value is ``key``, in creation order."""
        if self.appended:
            self._flush()
        return View.bucket(self, index, key, limit)

    def rank(self, row_id: str) -> tuple[int, int]:
        """Return a sort key for creation order: committed rows first, then this unit's."""
        if self.appended:
            self._flush()
        return View.rank(self, row_id)

    def scan(self, after: str | None = None) -> Iterator[R]:
        """Yield every row in creation order, strictly after the row ``after`` if given."""
        if self.appended:
            self._flush()
        return View.scan(self, after)

    def scan_by_id(self, after: str | None = None) -> Iterator[R]:
        """Yield every row in id order, strictly after the id ``after`` if given."""
        if self.appended:
            self._flush()
        return View.scan_by_id(self, after)

    def add(self, row: R, row_id: str | None = None) -> None:
        """Stage a new row; a taken id raises Conflict."""
        if self.appended:
            self._flush()
        View.add(self, row, row_id)

    def update(self, row: R, row_id: str | None = None) -> None:
        """Stage a replacement row; a missing id raises NotFound."""
        if self.appended:
            self._flush()
        View.update(self, row, row_id)

    def upsert(self, row: R) -> None:
        """Stage a row, new or replacing the one with its id."""
        if self.appended:
            self._flush()
        View.upsert(self, row)

    def delete(self, row_id: str) -> None:
        """Stage the removal of a row (a missing id raises NotFound)."""
        if self.appended:
            self._flush()
        View.delete(self, row_id)
