"""The in-memory store: the whole contract, kept in this process only (tests, scratch)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec

from ..errors import ConcurrencyError, IntegrityError
from .rows import StreamRow
from .store import (
    EncodedEvent,
    EventStore,
    RawRow,
    Snapshot,
    StreamInfo,
    TreeRow,
    parent_of,
    parent_of_rows,
    wrote,
)
from .verification import SnapshotRow

__all__ = ["MemoryStore"]


class MemoryStore(EventStore):
    """Events in lists, guarded by one lock. Nothing survives the process."""

    location = ":memory:"
    gapless_positions = True
    keeps_tree = True

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rows: list[RawRow] = []  # index = position - 1
        self._streams: dict[str, list[RawRow]] = {}
        self._info: dict[str, StreamInfo] = {}
        self._ids: dict[str, RawRow] = {}
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._tree: dict[tuple[int, int], TreeRow] = {}  # the Merkle tree's subtrees

    def _append(
        self,
        conversation_id: str,
        events: list[EncodedEvent],
        expected_version: int,
    ) -> list[int]:
        with self._lock:
            stream = self._streams.get(conversation_id, [])
            current = len(stream)
            if current != expected_version:
                retried = self._retried_positions(
                    conversation_id, [e.event.event_id for e in events], events
                )
                if retried is not None:
                    return retried
                raise ConcurrencyError(conversation_id, expected_version, current)
            for new, *_ in events:
                if new.event_id in self._ids:
                    raise IntegrityError(
                        f"event id {new.event_id!r} is already used by another event"
                    )
            prev_hash = stream[-1].hash if stream else ""
            prepared = self._prepare(conversation_id, events, current, prev_hash)
            positions: list[int] = []
            for event in prepared:
                row = RawRow(
                    conversation_id=conversation_id,
                    version=event.version,
                    position=len(self._rows) + 1,
                    event_id=event.event_id,
                    type=event.type,
                    schema_version=event.schema_version,
                    data=event.data,
                    metadata=event.metadata,
                    recorded_at=event.recorded_at,
                    hash=event.hash,
                    content_salt=event.content_salt,
                )
                self._rows.append(row)
                stream.append(row)
                self._ids[row.event_id] = row
                positions.append(row.position)
            self._streams[conversation_id] = stream
            wrote(events, prepared)
            now = prepared[-1].recorded_at
            old = self._info.get(conversation_id)
            parent_id, parent_version = (
                parent_of(events) if old is None else (old.parent_id, old.parent_version)
            )
            self._info[conversation_id] = StreamInfo(
                conversation_id=conversation_id,
                version=len(stream),
                created_at=old.created_at if old else now,
                updated_at=now,
                parent_id=parent_id,
                parent_version=parent_version,
            )
            self._lock.notify_all()
            return positions

    def _import_rows(
        self, conversation_id: str, rows: list[RawRow], after_version: int
    ) -> list[int]:
        with self._lock:
            stream = self._streams.get(conversation_id, [])
            if len(stream) != after_version:
                raise ConcurrencyError(conversation_id, after_version, len(stream))
            taken = [row.event_id for row in rows if row.event_id in self._ids]
            if taken:
                raise IntegrityError(f"event ids {taken[:3]} are already in this store")
            positions: list[int] = []
            for row in rows:
                stored = RawRow(
                    row.conversation_id,
                    row.version,
                    len(self._rows) + 1,
                    row.event_id,
                    row.type,
                    row.schema_version,
                    row.data,
                    row.metadata,
                    row.recorded_at,
                    row.hash,
                    row.content_salt,
                )
                self._rows.append(stored)
                stream.append(stored)
                self._ids[stored.event_id] = stored
                positions.append(stored.position)
            self._streams[conversation_id] = stream
            parent_id, parent_version = parent_of_rows(stream)
            self._info[conversation_id] = StreamInfo(
                conversation_id=conversation_id,
                version=stream[-1].version,
                created_at=stream[0].recorded_at,
                updated_at=stream[-1].recorded_at,
                parent_id=parent_id,
                parent_version=parent_version,
            )
            self._lock.notify_all()
            return positions

    def _erase_rows(
        self, erasures: Sequence[tuple[int, str, bytes]], snapshots_of: Sequence[str]
    ) -> int:
        erased = 0
        with self._lock:
            for position, salt, data in erasures:
                row = self._rows[position - 1]
                if row.content_salt != salt:
                    continue
                new = msgspec.structs.replace(row, data=data, content_salt="")
                self._rows[position - 1] = new
                self._streams[row.conversation_id][row.version - 1] = new
                self._ids[row.event_id] = new
                erased += 1
            for key in [key for key in self._snapshots if key[0] in set(snapshots_of)]:
                del self._snapshots[key]
        return erased

    def _read(
        self, conversation_id: str, after_version: int, to_version: int | None
    ) -> list[RawRow]:
        with self._lock:
            stream = self._streams.get(conversation_id, [])
            return stream[after_version:to_version]

    def _read_all(self, after_position: int, limit: int) -> list[RawRow]:
        with self._lock:
            return self._rows[after_position : after_position + limit]

    def _stream_ids(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def _rows_with_event_ids(self, event_ids: Sequence[str]) -> list[RawRow]:
        with self._lock:
            return [row for eid in dict.fromkeys(event_ids) if (row := self._ids.get(eid))]

    def _wait_for_new(
        self, position: int, poll_interval: float, stop: threading.Event | None
    ) -> None:
        with self._lock:
            if len(self._rows) <= position:
                self._lock.wait(poll_interval)

    def _stream_rows(self, conversation_id: str | None) -> list[StreamRow]:
        with self._lock:
            return [
                StreamRow(
                    info.conversation_id,
                    info.version,
                    self._streams[cid][-1].hash,
                    info.created_at,
                    info.updated_at,
                    info.parent_id,
                    info.parent_version,
                )
                for cid, info in self._info.items()
                if conversation_id is None or cid == conversation_id
            ]

    def _snapshot_rows(self, conversation_id: str | None) -> list[SnapshotRow]:
        with self._lock:
            return [
                SnapshotRow(cid, name, snapshot.version)
                for (cid, name), snapshot in self._snapshots.items()
                if conversation_id is None or cid == conversation_id
            ]

    def stream_info(self, conversation_id: str) -> StreamInfo | None:
        with self._lock:
            return self._info.get(conversation_id)

    def _conversations(self, limit: int | None, parent_id: str | None) -> list[StreamInfo]:
        with self._lock:
            infos = [
                info
                for info in self._info.values()
                if parent_id is None or info.parent_id == parent_id
            ]
        infos.sort(key=lambda info: info.updated_at, reverse=True)
        return infos[:limit] if limit is not None else infos

    def save_snapshot(self, snapshot: Snapshot) -> None:
        key = (snapshot.conversation_id, snapshot.name)
        with self._lock:
            old = self._snapshots.get(key)
            # As in SQLite: a snapshot never replaces one of a later (or the same) version.
            if old is None or snapshot.version > old.version:
                self._snapshots[key] = snapshot

    def delete_snapshot(self, conversation_id: str, name: str) -> bool:
        with self._lock:
            return self._snapshots.pop((conversation_id, name), None) is not None

    def load_snapshot(self, conversation_id: str, name: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get((conversation_id, name))

    # ----------------------------------------------------------------- the Merkle tree

    def _tree_nodes(self, nodes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], TreeRow]:
        with self._lock:
            return {node: self._tree[node] for node in nodes if node in self._tree}

    def _tree_frontier(self, level: int) -> TreeRow | None:
        with self._lock:
            rows = [row for (lvl, _), row in self._tree.items() if lvl == level]
        return max(rows, key=lambda row: row.idx, default=None)

    def _tree_before(self, level: int, position: int) -> TreeRow | None:
        with self._lock:
            rows = [
                row
                for (lvl, _), row in self._tree.items()
                if lvl == level and row.last_position < position
            ]
        return max(rows, key=lambda row: row.idx, default=None)

    def _tree_put(self, rows: Sequence[TreeRow]) -> None:
        with self._lock:
            for row in rows:
                self._tree.setdefault((row.level, row.idx), row)
