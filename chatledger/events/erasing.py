"""``erase``: take a person's content out of the log, keeping every hash (docs/erasure.md).

Three ways to choose what goes: one conversation (with the conversations forked from
it), every conversation of a subject (the id a client attached when it created them,
recorded in their first event's metadata as ``subject``), or everything recorded before
a retention period. For each conversation touched, a ``content_erased`` event recording
who, when, what and why is appended first; then, in one transaction, each event's
content values become placeholders keeping their commitments, its salt is dropped, and
the snapshots of the conversation and its forks are deleted; then the hooks in
:data:`ERASE_HOOKS` run (tables kept beside the log that hold content), and the store
makes the old bytes unreadable from its files.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ConcurrencyError, InvalidInputError, NotFoundError
from .envelope import NewEvent, check_json, validate_conversation_id
from .erasure import erase_data, has_content, valid_salt
from .kinds import ContentErased
from .rows import RawRow
from .store import EventStore

__all__ = ["ERASE_HOOKS", "ErasureReport", "erase", "parse_age", "validate_subject"]

#: Called after every erasure as ``hook(store, conversation_ids)`` with the conversations
#: whose content (or whose ancestors' content) was erased: tables kept beside the log
#: that copy content (a read model) must drop or rebuild their rows for them.
ERASE_HOOKS: list[Callable[[EventStore, list[str]], None]] = []

MAX_REASON = 1000
MAX_SUBJECT = 200
_AGE = re.compile(r"(\d{1,6})\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ErasureReport(msgspec.Struct, kw_only=True):
    """What an erasure did."""

    #: Conversations whose content was erased (each got a ``content_erased`` event).
    conversations: list[str] = msgspec.field(default_factory=list)
    #: How many events had content erased.
    events: int = 0
    #: (conversation, version) of events written before erasure existed: their content
    #: could not be erased in place (docs/erasure.md says what to do).
    not_erasable: list[tuple[str, int]] = msgspec.field(default_factory=list)
    #: What remains to be done to remove the old bytes from the database's files.
    notes: list[str] = msgspec.field(default_factory=list)


def parse_age(value: str | _dt.timedelta) -> _dt.timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` (or a timedelta) as a positive timedelta."""
    if isinstance(value, _dt.timedelta):
        age = value
    elif isinstance(value, str) and (found := _AGE.fullmatch(value.strip())):
        age = _dt.timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    else:
        raise InvalidInputError(
            f"an age is a number and a unit (s, m, h, d, w), such as 30d; got {value!r:.40}"
        )
    if age <= _dt.timedelta(0):
        raise InvalidInputError("an age must be more than 0")
    return age


def validate_subject(subject: object) -> str:
    """``subject``, if it is a non-empty printable string of at most 200 characters."""
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > MAX_SUBJECT
        or not subject.isprintable()
    ):
        raise InvalidInputError(
            f"a subject must be a non-empty printable string of at most {MAX_SUBJECT} "
            "characters (an id such as your end user's, not their name or email)"
        )
    return subject


def _check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInputError(f"{what} must be a non-empty string of at most {limit} characters")
    check_json(value, what)
    return value


def erase(
    store: EventStore,
    *,
    reason: str,
    actor: str,
    conversation_id: str | None = None,
    subject: str | None = None,
    older_than: str | _dt.timedelta | None = None,
    vacuum: bool = False,
    now: _dt.datetime | None = None,
) -> ErasureReport:
    """Erase the content of one conversation (and its forks), of every conversation of
    ``subject``, or of every event recorded more than ``older_than`` ago.

    Exactly one of ``conversation_id``, ``subject`` and ``older_than`` is given.
    ``reason`` (why) and ``actor`` (who) are recorded in each ``content_erased`` event.
    ``vacuum``: also run the store's full maintenance step (SQLite ``VACUUM``;
    PostgreSQL ``VACUUM FULL``, which locks the events table while it runs). Events
    written before erasure existed are listed in the report, not erased.
    """
    _check_text(reason, "the reason", MAX_REASON)
    _check_text(actor, "the actor", 200)
    chosen = [x for x in (conversation_id, subject, older_than) if x is not None]
    if len(chosen) != 1:
        raise InvalidInputError(
            "erase needs exactly one of a conversation id, a subject or an age (older_than)"
        )
    targets: dict[str, int | None] = {}
    cutoff: str | None = None
    if conversation_id is not None:
        validate_conversation_id(conversation_id)
        if store.stream_info(conversation_id) is None:
            raise NotFoundError(f"no conversation {conversation_id!r} in {store.location}")
        targets = dict.fromkeys(_with_forks(store, [conversation_id]))
    elif subject is not None:
        validate_subject(subject)
        found = [
            info.conversation_id
            for info in store.conversations()
            if _subject_of(store, info.conversation_id) == subject
        ]
        targets = dict.fromkeys(_with_forks(store, found))
    else:
        assert older_than is not None
        moment = (now or _dt.datetime.now(_dt.timezone.utc)) - parse_age(older_than)
        cutoff = moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for info in store.conversations():
            if info.created_at < cutoff:
                rows = store._read(info.conversation_id, 0, None)
                old = [row.version for row in rows if row.recorded_at < cutoff]
                if old:
                    targets[info.conversation_id] = max(old)
    report = ErasureReport()
    touched: list[str] = []
    for cid, up_to in targets.items():
        if _erase_conversation(store, cid, up_to, reason, actor, subject, cutoff, report):
            touched.append(cid)
    if touched:
        for hook in ERASE_HOOKS:
            hook(store, _with_forks(store, touched))
    report.notes.extend(store._purge_erased(vacuum))
    return report


def _erase_conversation(
    store: EventStore,
    conversation_id: str,
    up_to: int | None,
    reason: str,
    actor: str,
    subject: str | None,
    cutoff: str | None,
    report: ErasureReport,
) -> bool:
    """Erase one conversation's events up to ``up_to`` (None: all); whether any was."""
    for _ in range(10):
        rows = store._read(conversation_id, 0, up_to)
        if not rows:
            return False
        live = [row for row in rows if row.content_salt and valid_salt(row.content_salt)]
        old = [row.version for row in rows if row.content_salt is None and _holds_content(row)]
        if not live:
            report.not_erasable.extend((conversation_id, version) for version in old)
            return False
        if up_to is None:
            # All of it: the append fails (and this reads again) if the head moved.
            version = last = rows[-1].version
        else:
            head = store.stream_info(conversation_id)
            version, last = (head.version if head else 0), up_to
        event = NewEvent(
            data=ContentErased(
                reason=reason,
                up_to_version=last,
                count=len(live),
                subject=subject,
                older_than=cutoff,
                not_erasable=old,
            ),
            metadata={"actor": actor},
        )
        try:
            # Not store.append, which refuses content_erased events from anyone else.
            store._append(conversation_id, [store._encode(event)], version)
        except ConcurrencyError:
            continue  # another writer appended meanwhile: read again
        erasures = [
            (row.position, row.content_salt, _erased(row))
            for row in live
            if row.content_salt is not None
        ]
        report.events += store._erase_rows(erasures, _with_forks(store, [conversation_id]))
        report.conversations.append(conversation_id)
        report.not_erasable.extend((conversation_id, version) for version in old)
        return True
    raise ConcurrencyError(conversation_id, 0, 0)


def _erased(row: RawRow) -> bytes:
    assert row.content_salt
    data = msgspec.json.decode(row.data)
    return msgspec.json.encode(erase_data(row.type, data, row.content_salt))


def _holds_content(row: RawRow) -> bool:
    try:
        return has_content(row.type, msgspec.json.decode(row.data))
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return False


def _subject_of(store: EventStore, conversation_id: str) -> Any:
    first = store._read(conversation_id, 0, 1)
    if not first:
        return None
    try:
        metadata = msgspec.json.decode(first[0].metadata) if first[0].metadata else {}
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return None
    return metadata.get("subject") if isinstance(metadata, dict) else None


def _with_forks(store: EventStore, conversation_ids: list[str]) -> list[str]:
    """``conversation_ids`` and every conversation forked from them, recursively."""
    found = list(dict.fromkeys(conversation_ids))
    seen = set(found)
    index = 0
    while index < len(found):
        for child in store.conversations(parent_id=found[index]):
            if child.conversation_id not in seen:
                seen.add(child.conversation_id)
                found.append(child.conversation_id)
        index += 1
    return found
