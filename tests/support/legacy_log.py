"""Events as a chatledger before erasure wrote them (docs/erasure.md): no content salt,
the hash over the data as stored. Written with plain sqlite3 into a log file whose schema
may predate the ``content_salt`` column."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

import msgspec

from chatledger.events import EventData
from chatledger.events.envelope import event_hash, utc_now
from chatledger.events.kinds import data_to_builtins


def write_legacy_events(
    path: Path, conversation_id: str, datas: list[EventData], *, actor: str = "old"
) -> list[str]:
    """Append ``datas`` to ``conversation_id`` (a new conversation, or one written the
    same way) in the log file at ``path``, hashed over the data as stored; their hashes."""
    conn = sqlite3.connect(path, isolation_level=None)
    hashes: list[str] = []
    with contextlib.closing(conn):
        conn.execute("BEGIN IMMEDIATE")
        head = conn.execute(
            "SELECT version, head_hash FROM streams WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        version, prev_hash = head if head else (0, "")
        for data in datas:
            version += 1
            event_id, now = str(uuid.uuid4()), utc_now()
            builtins = data_to_builtins(data)
            metadata = {"actor": actor}
            digest = event_hash(
                conversation_id=conversation_id,
                version=version,
                event_id=event_id,
                type=data.type_name,
                schema_version=data.schema_version,
                data=builtins,
                metadata=metadata,
                recorded_at=now,
                prev_hash=prev_hash,
            )
            conn.execute(
                "INSERT INTO events (conversation_id, version, event_id, type, schema_version, "
                "data, metadata, recorded_at, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    version,
                    event_id,
                    data.type_name,
                    data.schema_version,
                    msgspec.json.encode(builtins).decode(),
                    msgspec.json.encode(metadata).decode(),
                    now,
                    digest,
                ),
            )
            if head is None and version == 1:
                conn.execute(
                    "INSERT INTO streams (conversation_id, version, head_hash, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, version, digest, now, now),
                )
            else:
                conn.execute(
                    "UPDATE streams SET version = ?, head_hash = ?, updated_at = ? "
                    "WHERE conversation_id = ?",
                    (version, digest, now, conversation_id),
                )
            prev_hash = digest
            hashes.append(digest)
        conn.execute("COMMIT")
    return hashes
