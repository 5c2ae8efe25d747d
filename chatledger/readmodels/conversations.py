"""The conversation read models: summaries for listings, contents for resumes.

Two tables beside the log (SQLite), written in the transaction of every append by
:data:`CONVERSATIONS` (registered in :data:`chatledger.events.store.INLINE_READ_MODELS`),
so they are never behind the events they derive from:

- ``chat_summaries``: one row per conversation: model, title (the first words of its
  first user message), turns, version and head hash, created and updated times, parent,
  and ``state``: the rest of what a resume needs (the open turn, the config, the last
  response, the usage), as JSON.
- ``chat_contents``: one row per turn of the full history, in order: its contents as a
  MessagePack array, and for each content whether it is in the context and in the curated
  history (as it is, or changed: then in ``curated``).

A resume reads one summary row and one range of turns (:func:`load_state`) instead of
folding every event; ``chats.list()`` reads summaries in ``updated_at`` order through an
index (:func:`list_summaries`). Each is used only when its version and head hash are the
stream's own (the events at the head say so): anything else (a log written by an older
chatledger, a store without the tables) falls back to folding the log.

A read model is a cache: :func:`check_read_models` (run by ``verify``) compares both
tables with a fold of the log and names every conversation whose rows differ, and
:func:`rebuild` (``chatledger rebuild``) writes them again from the log. See
docs/stores.md ("Read models") and docs/performance.md.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from .._gcpause import gc_paused
from ..errors import IntegrityError, StoreError
from ..events.envelope import RecordedEvent
from ..events.erasing import ERASE_HOOKS
from ..events.kinds import (
    ConversationStarted,
    HistoryReplaced,
    TurnRewound,
    shape_problem,
)
from ..events.memo import AppendMemo
from ..events.rows import RawRow, row_to_event
from ..events.store import (
    INLINE_READ_MODELS,
    EventStore,
    Problem,
    SummaryAdvance,
    VerificationReport,
)
from ..projections import history as history_projection
from ..projections import usage as usage_projection
from ..projections.history import HistoryState, TurnSpan, curate_contents
from ..projections.usage import UsageState
from .runner import Transaction

__all__ = [
    "CONTENTS_TABLE",
    "CONVERSATIONS",
    "SUMMARIES_TABLE",
    "ConversationReadModels",
    "ConversationState",
    "SummaryRow",
    "check_read_models",
    "first_words",
    "list_summaries",
    "load_state",
    "rebuild",
    "rebuild_conversation",
]

SUMMARIES_TABLE = "chat_summaries"
CONTENTS_TABLE = "chat_contents"

#: With the content salt: an erased event's placeholders are valid only with it (without
#: it, an erased conversation could not be folded, and its rows were dropped).
_EVENT_COLUMNS = (
    "conversation_id, version, position, event_id, type, schema_version, data, metadata, "
    "recorded_at, hash, content_salt"
)
_CONTENT_COLUMNS = "span, turn, version, loaded, flags, contents, curated"
#: The same, read: the packed columns as bytes whatever a damaged row holds there.
_CONTENT_READ = "span, turn, version, loaded, flags, CAST(contents AS BLOB), CAST(curated AS BLOB)"
_SUMMARY_COLUMNS = (
    "conversation_id, model, title, turns, version, head_hash, created_at, updated_at, "
    "parent_id, parent_version"
)

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_msgpack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder().decode


def _pack(contents: list[dict[str, Any]]) -> bytes:
    """A turn's contents as stored: MessagePack (decoded about three times faster than
    JSON, measured), or JSON text for what MessagePack cannot hold (an integer beyond 64
    bits); a reader tells them apart by the first byte."""
    try:
        return _msgpack.encode(contents)
    except (OverflowError, TypeError, ValueError):
        return _encode(contents)


def _unpacked(blob: bytes) -> list[dict[str, Any]]:
    decoded: list[dict[str, Any]] = _decode(blob) if blob[:1] == b"[" else _unpack(blob)
    return decoded


class ConversationState(msgspec.Struct):
    """``chat_summaries.state``: the projections without their contents (the history's
    ``full``, ``context``, ``curated`` and ``turns`` are empty: the contents table holds
    them), and how many content rows and turns the contents table holds."""

    history: HistoryState
    usage: UsageState
    rows: int = 0
    spans: int = 0


_STATE_DECODER = msgspec.json.Decoder(ConversationState)

#: The conversation read models' entries in a store's :class:`AppendMemo`.
_MEMO_KEY = "conversations"


class _Known(NamedTuple):
    """What the last append of a conversation wrote to its summary row (kept in the
    store's :class:`AppendMemo` for its next append)."""

    version: int
    state: ConversationState
    title: str
    created_at: str


class ContentRow(NamedTuple):
    """One row of ``chat_contents``: one turn of the full history (without the
    conversation id)."""

    #: The turn's place among the history's turns (0, 1, 2, ...).
    span: int
    turn: int
    version: int
    loaded: int
    #: One character per content of the turn: ``0`` not in the context; ``1`` in the
    #: context and in the curated history as it is; ``2`` in the context and in the
    #: curated history changed (the next item of ``curated``); ``3`` in the context only.
    flags: str
    #: The turn's contents, a MessagePack array (see :func:`_pack`).
    contents: bytes
    #: The changed curated contents (flag ``2``), packed the same way, or None.
    curated: bytes | None


class SummaryRow(NamedTuple):
    """One row of ``chat_summaries`` as listings read it."""

    conversation_id: str
    model: str
    title: str
    turns: int
    version: int
    head_hash: str
    created_at: str
    updated_at: str
    parent_id: str | None
    parent_version: int | None


def first_words(content: dict[str, Any], words: int = 8) -> str:
    """The first ``words`` words of a content's text parts (``...`` when there are more)."""
    text = " ".join(
        part["text"]
        for part in content.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ).split()
    return " ".join(text[:words]) + (" ..." if len(text) > words else "")


def _text_column(text: str) -> str:
    """A text for a summary column: PostgreSQL's text cannot hold a NUL, so a NUL is kept
    as U+FFFD, the same on every store (the events keep the text as it was given)."""
    return text.replace("\x00", "\ufffd")


def _title(contents: Iterable[dict[str, Any]]) -> str:
    """The first words of the first user content that has text."""
    for content in contents:
        if content.get("role") == "user":
            words = first_words(content)
            if words:
                return _text_column(words)
    return ""


# --------------------------------------------------------------------------- rows


def content_rows(history: HistoryState, first_span: int = 0) -> list[ContentRow]:
    """The contents rows of ``history``'s turns (numbered from ``first_span``): the same
    rows whether the history was folded in one go or one append at a time. The context
    of a turn is a subsequence of its full contents; the curated history is the context,
    each content curated on its own."""
    rows: list[ContentRow] = []
    full_at = context_at = curated_at = 0
    for number, span in enumerate(history.turns):
        full = history.full[full_at : full_at + span.full]
        context = history.context[context_at : context_at + span.context]
        curated = history.curated[curated_at : curated_at + span.curated]
        full_at, context_at, curated_at = (
            full_at + span.full,
            context_at + span.context,
            curated_at + span.curated,
        )
        next_context = next_curated = 0
        flags: list[str] = []
        changed: list[dict[str, Any]] = []
        for content in full:
            if not (next_context < len(context) and context[next_context] == content):
                flags.append("0")
                continue
            next_context += 1
            own = curate_contents([content])
            if not own:
                flags.append("3")
                continue
            if next_curated >= len(curated) or curated[next_curated] != own[0]:
                raise IntegrityError("a turn's curated history is not its curated context")
            next_curated += 1
            if own[0] is content or own[0] == content:
                flags.append("1")
            else:
                flags.append("2")
                changed.append(own[0])
        if next_context != len(context) or next_curated != len(curated):
            raise IntegrityError("a turn's context is not a subsequence of its contents")
        rows.append(
            ContentRow(
                first_span + number,
                span.turn,
                span.version,
                int(span.loaded),
                "".join(flags),
                _pack(full),
                _pack(changed) if changed else None,
            )
        )
    return rows


def _without_contents(history: HistoryState) -> HistoryState:
    return msgspec.structs.replace(history, full=[], context=[], curated=[], turns=[])


def _write_summary(
    tx: Transaction,
    conversation_id: str,
    state: ConversationState,
    title: str,
    created_at: str,
    last: RecordedEvent,
) -> None:
    history = state.history
    parent = history.parent
    tx.execute(
        f"INSERT INTO {SUMMARIES_TABLE} ({_SUMMARY_COLUMNS}, state) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET "
        "model = excluded.model, title = excluded.title, turns = excluded.turns, "
        "version = excluded.version, head_hash = excluded.head_hash, "
        "created_at = excluded.created_at, updated_at = excluded.updated_at, "
        "parent_id = excluded.parent_id, parent_version = excluded.parent_version, "
        "state = excluded.state",
        (
            conversation_id,
            _text_column(history.model),
            title,
            state.spans,
            last.version,
            last.hash,
            created_at,
            last.recorded_at,
            parent.conversation_id if parent is not None else None,
            parent.version if parent is not None else None,
            _encode(state).decode("utf-8"),
        ),
    )


def _update_summary(
    tx: Transaction,
    conversation_id: str,
    state: ConversationState,
    title: str,
    last: RecordedEvent,
) -> bool:
    """Move an existing summary row to ``last`` (an append: created_at and the parent do
    not change, so their columns, and the parent's index, are left alone). False when
    there is no row to update."""
    cursor = tx.execute(
        f"UPDATE {SUMMARIES_TABLE} SET model = ?, title = ?, turns = ?, version = ?, "
        "head_hash = ?, updated_at = ?, state = ? WHERE conversation_id = ?",
        (
            _text_column(state.history.model),
            title,
            state.spans,
            last.version,
            last.hash,
            last.recorded_at,
            _encode(state).decode("utf-8"),
            conversation_id,
        ),
    )
    return bool(cursor.rowcount == 1)


def _insert_contents(tx: Transaction, conversation_id: str, rows: Sequence[ContentRow]) -> None:
    for row in rows:
        tx.execute(
            f"INSERT INTO {CONTENTS_TABLE} (conversation_id, {_CONTENT_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, *row),
        )


# --------------------------------------------------------------------------- folding


def _events(tx: Transaction, conversation_id: str, to_version: int | None) -> list[RecordedEvent]:
    sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE conversation_id = ?"
    params: tuple[object, ...] = (conversation_id,)
    if to_version is not None:
        sql, params = sql + " AND version <= ?", (*params, to_version)
    events = [
        row_to_event(RawRow(*row))
        for row in tx.execute(sql + " ORDER BY version", params).fetchall()
    ]
    for expected, event in enumerate(events, start=1):
        if event.version != expected:
            raise IntegrityError(f"{conversation_id}: v{expected} is missing")
    return events


def _apply(history: HistoryState, usage: UsageState, event: RecordedEvent) -> None:
    problem = shape_problem(event.data)
    if problem is not None:
        raise IntegrityError(f"{event.conversation_id} v{event.version}: {problem}")
    history_projection.apply(history, event)
    usage_projection.apply(usage, event)


def fold_log(tx: Transaction, conversation_id: str) -> tuple[HistoryState, UsageState]:
    """The projections of a conversation at its head, folded from the events in ``tx``
    (a fork's from its parent's prefix, as the client folds them; no snapshot)."""
    chain: list[list[RecordedEvent]] = []
    seen: set[str] = set()
    current, limit, anchor, child = conversation_id, None, None, conversation_id
    while True:
        if current in seen:
            raise IntegrityError(f"conversation {current} is its own ancestor: run verify")
        seen.add(current)
        events = _events(tx, current, limit)
        if not events:
            raise IntegrityError(f"conversation {current} has no events: run verify")
        if limit is not None and (events[-1].version != limit or events[-1].hash != anchor):
            # The fork's first event names its parent's event by version and hash.
            raise IntegrityError(
                f"the fork {child} names event {limit} of its parent {current}, which the "
                "log does not hold with that hash: run verify"
            )
        chain.append(events)
        first = events[0].data
        if not isinstance(first, ConversationStarted) or first.parent is None:
            break
        child = current
        current, limit, anchor = (
            first.parent.conversation_id,
            first.parent.version,
            first.parent.hash,
        )
    history, usage = HistoryState(), UsageState()
    for index, events in enumerate(reversed(chain)):
        if index:
            history.pending = None  # a fork starts with no turn open
        for event in events:
            _apply(history, usage, event)
    return history, usage


def _expected(
    tx: Transaction, conversation_id: str
) -> tuple[ConversationState, str, str, RecordedEvent, list[ContentRow]]:
    """What the read models should hold for a conversation, from a fold of the log:
    (state, title, created_at, last event, contents rows)."""
    history, usage = fold_log(tx, conversation_id)
    own = _events(tx, conversation_id, None)
    rows = content_rows(history)
    state = ConversationState(
        _without_contents(history), usage, len(history.full), len(history.turns)
    )
    return state, _title(history.full), own[0].recorded_at, own[-1], rows


def rebuild_conversation(connection: Any, conversation_id: str) -> bool:
    """Write one conversation's read-model rows again from the log, in the caller's
    transaction (``connection``: the store's, as :meth:`EventStore.run_in_transaction`
    gives it). Returns False when the log cannot be folded (damaged: its rows are then
    deleted, so that reads fold the log and report the damage, and ``verify`` names it).

    This is the one function to call after changing a conversation's events by other
    means than an append (an erasure): it deletes and rewrites every row it has."""
    _invalidate()
    tx = Transaction(connection)
    tx.execute(f"DELETE FROM {CONTENTS_TABLE} WHERE conversation_id = ?", (conversation_id,))
    tx.execute(f"DELETE FROM {SUMMARIES_TABLE} WHERE conversation_id = ?", (conversation_id,))
    try:
        state, title, created_at, last, rows = _expected(tx, conversation_id)
    except (IntegrityError, StoreError, ValueError):
        return False
    _insert_contents(tx, conversation_id, rows)
    _write_summary(tx, conversation_id, state, title, created_at, last)
    return True


def _needs_fold(event: RecordedEvent) -> bool:
    """Events that remove contents or start from another history: the conversation's
    rows are folded again from the log (rare: rewinds, history replacements, forks)."""
    data = event.data
    return (
        isinstance(data, (TurnRewound, HistoryReplaced))
        or (
            isinstance(data, ConversationStarted)
            and (data.parent is not None or event.version != 1)
        )
        or shape_problem(data) is not None
    )


class ConversationReadModels:
    """The inline read model of the two tables (see the module docstring)."""

    def _advance(
        self,
        connection: Any,
        conversation_id: str,
        rows: Sequence[RawRow],
        memo: AppendMemo | None,
    ) -> None:
        tx = Transaction(connection)
        events = [row_to_event(row) for row in rows]
        key = (_MEMO_KEY, conversation_id)
        if not events or any(_needs_fold(event) for event in events):
            if memo is not None:
                memo.discard(key)
            rebuild_conversation(connection, conversation_id)
            return
        # The state this store's last append of the conversation wrote, when the memo
        # can vouch that the summary row still holds it (chatledger.events.memo).
        known: _Known | None = memo.take(key) if memo is not None else None
        exists = events[0].version != 1
        if not exists:
            state = ConversationState(HistoryState(), UsageState())
            title, created_at = "", events[0].recorded_at
        elif known is not None and known.version == events[0].version - 1:
            state, title, created_at = known.state, known.title, known.created_at
        else:
            found = tx.execute(
                f"SELECT version, state, title, created_at FROM {SUMMARIES_TABLE} "
                "WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            try:
                if found is None or found[0] != events[0].version - 1:
                    raise ValueError("behind the log")
                state = _STATE_DECODER.decode(found[1])
                title, created_at = str(found[2]), str(found[3])
            except (ValueError, msgspec.DecodeError, TypeError):
                # Missing (an older chatledger wrote the last events) or damaged: fold.
                rebuild_conversation(connection, conversation_id)
                return
        history, usage = state.history, state.usage
        for event in events:
            _apply(history, usage, event)
        new = content_rows(history, state.spans)
        _insert_contents(tx, conversation_id, new)
        title = title or _title(history.full)
        state = ConversationState(
            _without_contents(history),
            usage,
            state.rows + len(history.full),
            state.spans + len(history.turns),
        )
        last = events[-1]
        if not exists or not _update_summary(tx, conversation_id, state, title, last):
            _write_summary(tx, conversation_id, state, title, created_at, last)
        if memo is not None:
            memo.put(key, _Known(last.version, state, title, created_at))

    def appended(
        self,
        connection: Any,
        conversation_id: str,
        rows: Sequence[RawRow],
        memo: AppendMemo | None = None,
    ) -> None:
        """Advance the conversation's rows by the events just appended: its state is
        read (or taken from ``memo``, the store's, when it holds what the row holds), the
        new events applied to it, and only the new turns inserted."""
        self._advance(connection, conversation_id, rows, memo)
        if rows and rows[0].version == 1:
            # Forks of this conversation written before it (an import in another order)
            # could not be folded then: they can now.
            for (fork,) in (
                Transaction(connection)
                .execute(
                    f"SELECT s.conversation_id FROM streams AS s LEFT JOIN {SUMMARIES_TABLE} AS c "
                    "ON c.conversation_id = s.conversation_id "
                    "WHERE s.parent_id = ? AND c.conversation_id IS NULL",
                    (conversation_id,),
                )
                .fetchall()
            ):
                if memo is not None:
                    memo.discard((_MEMO_KEY, str(fork)))
                rebuild_conversation(connection, str(fork))

    def advance(self, state: str | None, rows: Sequence[RawRow]) -> SummaryAdvance | None:
        """What :meth:`appended` would write for ``rows``, computed before they are
        appended, from the summary's ``state`` (None for a new stream): for a store that
        writes the rows in the append's own statement (PostgreSQL) and checks there that
        the summary still holds ``state``. None when the rows need a fold (a rewind, a
        fork...) or ``state`` cannot be read: the store then runs :meth:`appended`."""
        try:
            events = [row_to_event(row) for row in rows]
        except (StoreError, ValueError, msgspec.DecodeError, TypeError):
            return None  # appended() meets the same rows in the append's transaction
        if not events or any(_needs_fold(event) for event in events):
            return None
        if events[0].version == 1:
            prior = ConversationState(HistoryState(), UsageState())
        elif state is None:
            return None
        else:
            try:
                prior = _STATE_DECODER.decode(state)
            except (ValueError, msgspec.DecodeError, TypeError):
                return None
        history, usage = prior.history, prior.usage
        for event in events:
            _apply(history, usage, event)
        new = content_rows(history, prior.spans)
        title = _title(history.full)
        after = ConversationState(
            _without_contents(history),
            usage,
            prior.rows + len(history.full),
            prior.spans + len(history.turns),
        )
        return SummaryAdvance(
            model=_text_column(history.model),
            title=title,
            turns=after.spans,
            created_at=events[0].recorded_at,
            updated_at=events[-1].recorded_at,
            state=_encode(after).decode("utf-8"),
            contents=[tuple(row) for row in new],  # type: ignore[misc]
        )

    def rebuild_all(self, connection: Any) -> None:
        """Write both tables again from the log, for every conversation."""
        _invalidate()
        tx = Transaction(connection)
        tx.execute(f"DELETE FROM {CONTENTS_TABLE}")
        tx.execute(f"DELETE FROM {SUMMARIES_TABLE}")
        for (conversation_id,) in tx.execute(
            "SELECT conversation_id FROM streams ORDER BY conversation_id"
        ).fetchall():
            if isinstance(conversation_id, str):
                rebuild_conversation(connection, conversation_id)


#: The instance every SQLite store calls (registered below, when chatledger is imported).
CONVERSATIONS = ConversationReadModels()
if not any(isinstance(model, ConversationReadModels) for model in INLINE_READ_MODELS):
    INLINE_READ_MODELS.append(CONVERSATIONS)


def after_erasure(store: EventStore, conversation_ids: list[str]) -> None:
    """The read models copy content: after an erasure (docs/erasure.md) each erased
    conversation's rows are written again from its erased events, so that only
    placeholders remain (the erasure runs this with secure deletes, before it empties
    the WAL)."""
    if type(store).run_read is EventStore.run_read:
        return  # no database, so no read models (memory)

    def work(connection: Any) -> None:
        if not _has_tables(connection):
            return
        _lock_out_appends(connection)
        for conversation_id in conversation_ids:
            rebuild_conversation(connection, conversation_id)

    store.run_in_transaction(work)


if after_erasure not in ERASE_HOOKS:
    ERASE_HOOKS.append(after_erasure)


# --------------------------------------------------------------------------- reading


#: A packed column read as bytes on SQLite (see :func:`_packed`).
_CAST = re.compile(r"CAST\(([\w.]+) AS BLOB\)")
#: The connection's data_version (SQLite's only: PostgreSQL reads NULL there).
_DATA_VERSION = "(SELECT data_version FROM pragma_data_version())"

#: The summary row and the stream's head as its events say it (the highest version, the
#: hash of the event at the summary's version, and how many events there are): the read
#: model is used only when it is at the head the log has, with no event missing. Last,
#: the connection's ``data_version``, which changes whenever another connection (of this
#: or another process) has committed: what :class:`_Cached` contents are checked with.
_CURRENT_SQL = (
    "SELECT c.version, c.head_hash, CAST(c.state AS BLOB), (SELECT max(m.version) FROM events AS m "
    "WHERE m.conversation_id = c.conversation_id), h.hash, (SELECT count(*) FROM events AS n "
    "WHERE n.conversation_id = c.conversation_id), "
    f"{_DATA_VERSION} FROM {SUMMARIES_TABLE} AS c LEFT JOIN events AS h "
    "ON h.conversation_id = c.conversation_id AND h.version = c.version "
    "WHERE c.conversation_id = ?"
)
_CURRENT_SQL_PG = _CAST.sub(r"\1", _CURRENT_SQL.replace(_DATA_VERSION, "NULL"))
_CONTENTS_SQL = (
    f"SELECT {_CONTENT_READ} FROM {CONTENTS_TABLE} WHERE conversation_id = ? ORDER BY span"
)


def _packed(tx: Transaction, sql: str) -> str:
    """``sql`` as ``tx``'s database reads the packed columns: SQLite CASTs them to bytes
    (a damaged row may hold text there); PostgreSQL's columns hold nothing but bytea
    (contents) and text (state), read as they are."""
    return sql if tx.dialect == "sqlite" else _CAST.sub(r"\1", sql)


class _Cached(NamedTuple):
    """A conversation's contents as :func:`_load` last read them on one store's
    connection, and what the rows were read at: used again only when the summary row is
    the same (version, head hash, state bytes), no other connection has committed since
    (``data_version``) and nothing was rebuilt in this process since (``rebuilds``)."""

    data_version: int
    rebuilds: int
    version: int
    head_hash: str
    state: bytes
    full: list[dict[str, Any]]
    context: list[dict[str, Any]]
    curated: list[dict[str, Any]]
    turns: list[TurnSpan]


#: Per store (its one connection): conversation id -> :class:`_Cached`, least recently
#: read first. Bounded by :data:`CACHE_CONVERSATIONS` and :data:`CACHE_CONTENTS`.
_CACHES: weakref.WeakKeyDictionary[EventStore, dict[str, _Cached]] = weakref.WeakKeyDictionary()
#: The most conversations, and contents in all, one store's cache keeps.
CACHE_CONVERSATIONS = 64
CACHE_CONTENTS = 100_000
#: How many times read-model rows were rewritten from the log in this process (a rebuild,
#: an erasure, a fold on append): a cached read from before is not used again.
_rebuilds = 0


def forget(store: EventStore) -> None:
    """Drop what ``store`` keeps of the contents it read (when it is closed: its contents
    are then freed with the chats that hold them, not when the store is collected)."""
    _CACHES.pop(store, None)


def _invalidate() -> None:
    global _rebuilds
    _rebuilds += 1


def _remember(cache: dict[str, _Cached], conversation_id: str, entry: _Cached) -> None:
    cache.pop(conversation_id, None)
    if len(entry.full) > CACHE_CONTENTS:
        return
    cache[conversation_id] = entry
    total = sum(len(cached.full) for cached in cache.values())
    while len(cache) > CACHE_CONVERSATIONS or total > CACHE_CONTENTS:
        oldest = next(iter(cache))
        total -= len(cache.pop(oldest).full)


def _load(
    connection: Any, conversation_id: str, cache: dict[str, _Cached] | None = None
) -> tuple[HistoryState, UsageState] | None:
    tx = Transaction(connection)
    if tx.dialect == "sqlite":
        found = tx.execute(_CURRENT_SQL, (conversation_id,)).fetchone()
    else:
        # PostgreSQL has no data_version to tell another connection's commit: no cache.
        found = tx.execute(_CURRENT_SQL_PG, (conversation_id,)).fetchone()
        cache = None
    # Not at the head, or an event missing below it (a damaged log: the fold names it).
    if found is None or found[0] != found[3] or found[1] != found[4] or found[5] != found[0]:
        return None
    state = _STATE_DECODER.decode(found[2])
    history = state.history
    cached = cache.get(conversation_id) if cache is not None else None
    if (
        cache is not None
        and cached is not None
        and cached.data_version == found[6]
        and cached.rebuilds == _rebuilds
        and cached.version == found[0]
        and cached.head_hash == found[1]
        and cached.state == found[2]
    ):
        # The same rows as last read: their contents again, in lists of this state's own
        # (contents are never changed in place: HistoryState.copy shares them too).
        cache[conversation_id] = cache.pop(conversation_id)  # now the most recently read
        history.full, history.context = list(cached.full), list(cached.context)
        history.curated, history.turns = list(cached.curated), list(cached.turns)
        return history, state.usage
    rows = tx.execute(_packed(tx, _CONTENTS_SQL), (conversation_id,)).fetchall()
    if len(rows) != state.spans:
        return None
    turns_contents = [_unpacked(row[5]) for row in rows]
    full: list[dict[str, Any]] = []
    context: list[dict[str, Any]] = []
    curated: list[dict[str, Any]] = []
    turns: list[TurnSpan] = []
    for number, (row, contents) in enumerate(zip(rows, turns_contents, strict=True)):
        flags = row[4]
        if row[0] != number or len(flags) != len(contents):
            return None
        full += contents
        if flags == "11":  # the usual turn: a message and its reply, both kept
            context += contents
            curated += contents
            turns.append(TurnSpan(row[1], 2, 2, 2, row[2], bool(row[3])))
            continue
        changed = iter(_unpacked(row[6]) if row[6] else ())
        in_context = in_curated = 0
        for flag, content in zip(flags, contents, strict=True):
            if flag == "0":
                continue
            context.append(content)
            in_context += 1
            if flag == "1":
                curated.append(content)
                in_curated += 1
            elif flag == "2":
                curated.append(next(changed))
                in_curated += 1
        turns.append(TurnSpan(row[1], len(contents), in_context, in_curated, row[2], bool(row[3])))
    if len(full) != state.rows:
        return None
    if cache is not None:
        _remember(
            cache,
            conversation_id,
            _Cached(
                found[6],
                _rebuilds,
                found[0],
                found[1],
                found[2],
                list(full),
                list(context),
                list(curated),
                list(turns),
            ),
        )
    history.full, history.context, history.curated, history.turns = full, context, curated, turns
    return history, state.usage


def load_state(store: EventStore, conversation_id: str) -> tuple[HistoryState, UsageState] | None:
    """A conversation's projections at its head from the read models, or None when they
    cannot give them (no such tables in this store, the conversation not in them, or
    rows that are not at the stream's head): then fold the log.

    The contents last read for a conversation are kept per store (:class:`_Cached`): a
    second read of it, with its summary row unchanged and no other connection having
    written since, fetches and decodes no contents row."""

    def work(connection: Any) -> tuple[HistoryState, UsageState] | None:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = {}
        return _load(connection, conversation_id, cache)

    try:
        with gc_paused():  # thousands of decoded contents, no cycle among them
            return store.run_read(work)
    except (StoreError, msgspec.DecodeError, ValueError, TypeError, IndexError):
        return None


def list_summaries(
    store: EventStore, limit: int | None, parent_id: str | None
) -> tuple[list[SummaryRow], set[str]] | None:
    """The newest summaries first (with ``parent_id``, only its forks), read through the
    ``updated_at`` index, and the ids among them whose row is not at its stream's head
    (the caller summarises those from the log); None when this store has no read models."""
    where, params = "", ()  # type: tuple[str, tuple[object, ...]]
    if parent_id is not None:
        where, params = "WHERE parent_id = ? ", (parent_id,)
    page = f"SELECT {_SUMMARY_COLUMNS} FROM {SUMMARIES_TABLE} {where}ORDER BY updated_at DESC, conversation_id"
    if limit is not None:
        page, params = page + " LIMIT ?", (*params, limit)
    sql = (
        "SELECT c.*, s.version, s.head_hash FROM (" + page + ") AS c "
        "LEFT JOIN streams AS s ON s.conversation_id = c.conversation_id "
        "ORDER BY c.updated_at DESC, c.conversation_id"
    )

    def work(connection: Any) -> tuple[list[SummaryRow], set[str]]:
        found = Transaction(connection).execute(sql, params).fetchall()
        rows = [SummaryRow(*row[:10]) for row in found]
        stale = {row[0] for row in found if row[4] != row[10] or row[5] != row[11]}
        return rows, stale

    try:
        return store.run_read(work)
    except StoreError:
        return None


# --------------------------------------------------------------------------- verify / rebuild


def _has_tables(connection: Any) -> bool:
    tx = Transaction(connection)
    if tx.dialect == "postgresql":
        # The tables on the transaction's search_path (the store's schema first).
        found = tx.execute(
            "SELECT (to_regclass(?) IS NOT NULL AND to_regclass(?) IS NOT NULL)::int * 2",
            (SUMMARIES_TABLE, CONTENTS_TABLE),
        ).fetchone()
    else:
        found = tx.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
            (SUMMARIES_TABLE, CONTENTS_TABLE),
        ).fetchone()
    return bool(found[0] == 2)


def _lock_out_appends(connection: Any) -> None:
    """Before rows are written again outside an append (rebuild, erasure): on PostgreSQL,
    appends from other connections wait until this transaction ends before they advance
    a summary (their advisory lock is taken before this lock, never after it), so none
    advances a row from a state this transaction replaces. SQLite has one writer."""
    tx = Transaction(connection)
    if tx.dialect == "postgresql":
        tx.execute(f"LOCK TABLE {SUMMARIES_TABLE} IN SHARE ROW EXCLUSIVE MODE")


def check_read_models(
    store: EventStore, conversation_ids: Iterable[str] | None, report: VerificationReport
) -> int:
    """Compare the read models of ``conversation_ids`` (None: every conversation, and
    rows of conversations the log does not have) with a fold of the log; add a problem
    naming each conversation whose summary or contents differ. Returns how many
    conversations were checked (0 for a store without read models)."""

    def work(connection: Any) -> int:
        if not _has_tables(connection):
            return 0
        tx = Transaction(connection)
        ids = (
            list(conversation_ids)
            if conversation_ids is not None
            else [
                str(row[0])
                for row in tx.execute("SELECT conversation_id FROM streams ORDER BY 1").fetchall()
            ]
        )
        if conversation_ids is None:
            for (orphan,) in tx.execute(
                f"SELECT DISTINCT conversation_id FROM {SUMMARIES_TABLE} WHERE conversation_id "
                "NOT IN (SELECT conversation_id FROM streams) UNION SELECT DISTINCT "
                f"conversation_id FROM {CONTENTS_TABLE} WHERE conversation_id NOT IN "
                "(SELECT conversation_id FROM streams)"
            ).fetchall():
                _problem(report, str(orphan), "has read-model rows but no events in the log")
        for conversation_id in ids:
            _check_one(tx, conversation_id, report)
        return len(ids)

    if type(store).run_read is EventStore.run_read:
        return 0  # no database, so no read models (memory)
    try:
        return store.run_read(work)
    except StoreError as exc:
        # Tables that cannot even be read (text that is not UTF-8, a column of another
        # type): a damaged read model, named rather than skipped.
        _problem(report, store.location, f"cannot be read ({exc})")
        return 0


def _problem(report: VerificationReport, conversation_id: str, what: str) -> None:
    report.problems.append(
        Problem(
            conversation_id=conversation_id,
            version=None,
            reason=(
                f"its read model (tables {SUMMARIES_TABLE} and {CONTENTS_TABLE}) {what}: "
                "listings and resumes would show what the log does not say. Run "
                "`chatledger rebuild` to write the read models again from the log"
            ),
        )
    )


def _check_one(tx: Transaction, conversation_id: str, report: VerificationReport) -> None:
    if any(problem.conversation_id == conversation_id for problem in report.problems):
        return  # its events are damaged, and named: a fold of them proves nothing
    try:
        state, title, created_at, last, rows = _expected(tx, conversation_id)
    except (IntegrityError, StoreError, ValueError):
        return  # the log itself is damaged: the store's verify names the events
    found = tx.execute(
        _packed(
            tx,
            f"SELECT {_SUMMARY_COLUMNS}, CAST(state AS BLOB) FROM {SUMMARIES_TABLE} "
            "WHERE conversation_id = ?",
        ),
        (conversation_id,),
    ).fetchone()
    if found is None:
        _problem(report, conversation_id, "is missing (no summary row)")
        return
    parent = state.history.parent
    expected_summary = SummaryRow(
        conversation_id,
        _text_column(state.history.model),
        title,
        state.spans,
        last.version,
        last.hash,
        created_at,
        last.recorded_at,
        parent.conversation_id if parent is not None else None,
        parent.version if parent is not None else None,
    )
    if tuple(found[:10]) != tuple(expected_summary):
        changed = [
            name
            for name, a, b in zip(SummaryRow._fields, found[:10], expected_summary, strict=True)
            if a != b
        ]
        _problem(report, conversation_id, f"summary differs from the log ({', '.join(changed)})")
        return
    try:
        stored_state = msgspec.to_builtins(_STATE_DECODER.decode(found[10]))
    except (msgspec.DecodeError, TypeError, ValueError):
        stored_state = None
    if stored_state != msgspec.to_builtins(state):
        _problem(report, conversation_id, "state differs from the log")
        return
    stored = [
        ContentRow(*row)
        for row in tx.execute(
            _packed(
                tx,
                f"SELECT {_CONTENT_READ} FROM {CONTENTS_TABLE} WHERE conversation_id = ? "
                "ORDER BY span",
            ),
            (conversation_id,),
        ).fetchall()
    ]
    if stored != rows:
        at = next(
            (index for index, (a, b) in enumerate(zip(stored, rows, strict=False)) if a != b),
            min(len(stored), len(rows)),
        )
        _problem(
            report,
            conversation_id,
            f"contents differ from the log (from turn {at}: {len(stored)} turns stored, "
            f"{len(rows)} in the log)",
        )


def rebuild(store: EventStore, conversation_ids: Iterable[str] | None = None) -> int:
    """Write the read models again from the log (every conversation, or those given), in
    one transaction; returns how many conversations were written. Raises
    :class:`StoreError` for a store without read models (memory)."""

    def work(connection: Any) -> int:
        if not _has_tables(connection):
            raise StoreError(f"{store.location} keeps no conversation read models to rebuild")
        _lock_out_appends(connection)
        if conversation_ids is None:
            CONVERSATIONS.rebuild_all(connection)
            return int(
                Transaction(connection)
                .execute(f"SELECT count(*) FROM {SUMMARIES_TABLE}")
                .fetchone()[0]
            )
        return sum(rebuild_conversation(connection, cid) for cid in conversation_ids)

    return store.run_in_transaction(work)
