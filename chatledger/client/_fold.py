"""Folding a conversation's events into its histories, snapshots, and verification.

A conversation's state (its three histories, its open turn, its usage) is a fold of its
events, a fork's starting with its parent's prefix. Snapshots cache that state for long
conversations; they are outside the hash chain, so a resume uses one only when it is
anchored to the hash of the event at its version, and :func:`verify_log` folds the log
without them to check each one. See docs/stores.md ("Snapshots").
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import IntegrityError, NotFoundError
from ..events.envelope import RecordedEvent
from ..events.erasure import has_content
from ..events.kinds import ContentErased, ConversationStarted, data_to_builtins, shape_problem
from ..events.store import EventStore, Problem, Snapshot, VerificationReport
from ..projections import history as history_projection
from ..projections import usage as usage_projection
from ..projections.history import HistoryState
from ..projections.usage import UsageState
from ..readmodels.conversations import check_read_models

__all__ = [
    "SNAPSHOT_NAME",
    "ErasurePending",
    "FoldCache",
    "check_shape",
    "check_snapshots",
    "erasure_pending",
    "fold_events",
    "make_snapshot",
    "snapshot_due",
    "verify_log",
]

logger = logging.getLogger("chatledger")

SNAPSHOT_NAME = "conversation"
SNAPSHOT_FORMAT = 4  # 4: TurnSpan.loaded
# Folding a few thousand events is as fast as decoding a snapshot of them, so the first
# snapshot waits for SNAPSHOT_EVERY events; later ones come when the log has grown by a
# tenth (at least SNAPSHOT_EVERY events), which bounds both the events a resume folds and
# the bytes snapshots rewrite over a conversation's life (about ten times its history).
SNAPSHOT_EVERY = 2000
SNAPSHOT_GROWTH = 10


def snapshot_due(snapshot_version: int, version: int) -> bool:
    """Whether a conversation whose last snapshot is at ``snapshot_version`` (0: none)
    should get a new one at ``version``."""
    grown = version - snapshot_version
    return grown >= SNAPSHOT_EVERY and grown * SNAPSHOT_GROWTH >= snapshot_version


class _Snapshot(msgspec.Struct, array_like=True):
    """The projections at a version. Contents are stored once: the three histories share
    most of them, so each history is a list of indexes into ``contents``."""

    format: int
    hash: str
    history: HistoryState  # with full, context and curated left empty
    usage: UsageState
    contents: list[dict[str, Any]]
    full: list[int]
    context: list[int]
    curated: list[int]


def _dump_snapshot(history: HistoryState, usage: UsageState, anchor_hash: str) -> bytes:
    index: dict[int, int] = {}
    contents: list[dict[str, Any]] = []

    def ref(content: dict[str, Any]) -> int:
        key = id(content)
        if key not in index:
            index[key] = len(contents)
            contents.append(content)
        return index[key]

    lists = [[ref(c) for c in items] for items in (history.full, history.context, history.curated)]
    meta = msgspec.structs.replace(history, full=[], context=[], curated=[])
    return _SNAPSHOT_ENCODER.encode(
        _Snapshot(SNAPSHOT_FORMAT, anchor_hash, meta, usage, contents, *lists)
    )


def make_snapshot(
    conversation_id: str, version: int, history: HistoryState, usage: UsageState, anchor_hash: str
) -> Snapshot:
    """The client's snapshot of a conversation at ``version`` (anchored to that event's hash)."""
    return Snapshot(
        conversation_id=conversation_id,
        name=SNAPSHOT_NAME,
        version=version,
        state=_dump_snapshot(history, usage, anchor_hash),
    )


def _restore(snapshot: _Snapshot) -> HistoryState:
    contents = snapshot.contents
    history = snapshot.history
    history.full = [contents[i] for i in snapshot.full]
    history.context = [contents[i] for i in snapshot.context]
    history.curated = [contents[i] for i in snapshot.curated]
    return history


_SNAPSHOT_ENCODER = msgspec.msgpack.Encoder()
_SNAPSHOT_DECODER = msgspec.msgpack.Decoder(_Snapshot)


def verify_log(
    store: EventStore, conversation_id: str | None = None, *, rebuild_snapshots: bool = False
) -> VerificationReport:
    """``store.verify`` of one conversation (or the whole log), then :func:`check_snapshots`
    and the read models' check (:func:`chatledger.readmodels.check_read_models`) of the
    same conversations: what ``chat.verify()`` and ``chatledger verify`` report."""
    report = store.verify(conversation_id)
    ids = (
        [conversation_id]
        if conversation_id
        else [info.conversation_id for info in store.conversations()]
    )
    report.snapshots_checked = check_snapshots(store, ids, report, rebuild=rebuild_snapshots)
    report.read_models_checked = check_read_models(
        store, [conversation_id] if conversation_id else None, report
    )
    return report


def check_snapshots(
    store: EventStore,
    conversation_ids: Iterable[str],
    report: VerificationReport,
    *,
    rebuild: bool = False,
) -> int:
    """Compare each conversation's snapshot, if a resume would use it, with the log folded
    without it up to the same version; add a problem to ``report`` for each that differs
    (or, with ``rebuild``, write it again from the log). Returns the snapshots checked.

    The hash chain covers events, not snapshots: a modified snapshot whose anchor hash
    still matches would make every resume start from histories the log does not hold.
    This costs a fold of each such conversation (snapshots exist only on long ones)."""
    checked = 0
    for conversation_id in conversation_ids:
        snapshot = store.load_snapshot(conversation_id, SNAPSHOT_NAME)
        if snapshot is None:
            continue
        loaded = _load_snapshot(store, snapshot)
        if loaded is None:
            continue  # unreadable or anchored elsewhere: resumes ignore it already
        checked += 1
        try:
            history, usage, _ = fold_events(
                store, conversation_id, to_version=snapshot.version, use_snapshot=False
            )
        except IntegrityError:
            continue  # the events are damaged: the store's own verify names them
        if history_projection.dump_state(history) == history_projection.dump_state(
            loaded[0]
        ) and msgspec.to_builtins(usage) == msgspec.to_builtins(loaded[1]):
            continue
        if rebuild:
            anchor = store.read(
                conversation_id, after_version=snapshot.version - 1, to_version=snapshot.version
            )
            # A snapshot never replaces one of the same version: forget it first.
            store.delete_snapshot(conversation_id, SNAPSHOT_NAME)
            store.save_snapshot(
                make_snapshot(conversation_id, snapshot.version, history, usage, anchor[0].hash)
            )
            continue
        report.problems.append(
            Problem(
                conversation_id=conversation_id,
                version=snapshot.version,
                reason=(
                    "its snapshot does not hold the histories the log gives at this version "
                    "(it was modified; resumes would start from it): run "
                    "`chatledger verify --rebuild-snapshots` to write it again from the log"
                ),
            )
        )
    return checked


def check_shape(event: RecordedEvent) -> RecordedEvent:
    """``event``, if its data has a shape the projections can fold (see
    :func:`chatledger.events.kinds.shape_problem`); else IntegrityError naming it."""
    problem = shape_problem(event.data)
    if problem is not None:
        raise IntegrityError(
            f"{event.conversation_id} v{event.version} (position {event.position}) is not an "
            f"event chatledger writes ({problem}): the log was written by something else"
        )
    return event


class ErasurePending(IntegrityError):
    """A fold read, with their content, events that a ``content_erased`` event read in the
    same fold covers: the erasure has appended its event but not yet replaced the content
    (its second step), or was interrupted between the two (docs/erasure.md#open-chats)."""


def erasure_pending(events: list[RecordedEvent]) -> list[int]:
    """The versions, among ``events`` (one stream's, in order), of events that a later
    ``content_erased`` event among them covers but that were read with their content
    (not erased, and not listed as written before erasure existed)."""
    pending: list[int] = []
    covered = 0
    old: set[int] = set()
    for event in reversed(events):
        data = event.data
        if isinstance(data, ContentErased):
            covered = max(covered, data.up_to_version)
            old.update(data.not_erasable)
        elif (
            event.version <= covered
            and not event.erased
            and event.version not in old
            and has_content(event.type, data_to_builtins(data))
        ):
            pending.append(event.version)
    return sorted(pending)


FoldCache = dict[tuple[str, int | None], tuple[HistoryState, UsageState]]


def fold_events(
    store: EventStore,
    conversation_id: str,
    *,
    to_version: int | None = None,
    use_snapshot: bool = True,
    cache: FoldCache | None = None,
    check_erasure: bool = False,
) -> tuple[HistoryState, UsageState, int]:
    """The projections of a conversation at ``to_version`` (default: its head).

    Starts from a snapshot when one is usable; a fork first folds its parent's prefix
    (and so on up to the root, or to an ancestor with a usable snapshot: iteratively, so
    a chain of forks of any length folds). Returns (history, usage, snapshot version used
    or 0). ``cache`` keeps the state of every (conversation, version) folded on the way,
    so that folding many related conversations (a tree of forks) reads each event once.

    ``check_erasure``: raise :class:`ErasurePending` if an event that a ``content_erased``
    event read in this fold covers was read with its content; a ``content_erased`` event
    read after a snapshot makes it fold again without snapshots (the snapshot may predate
    the erasure). Used where a state is kept or written (docs/erasure.md#open-chats).
    """
    # From the conversation up through its ancestors: (state to start from, events).
    chain: list[tuple[HistoryState, UsageState, list[RecordedEvent]]] = []
    keys: list[tuple[str, int | None]] = []
    seen: set[str] = set()
    current, limit, snapshots = conversation_id, to_version, use_snapshot
    used = 0
    while True:
        if current in seen:
            raise IntegrityError(f"conversation {current} is its own ancestor; run verify")
        seen.add(current)
        keys.append((current, limit))
        cached = cache.get((current, limit)) if cache is not None else None
        if cached is not None:
            chain.append((cached[0].copy(), copy.deepcopy(cached[1]), []))
            break
        history, usage, after = HistoryState(), UsageState(), 0
        snapshot = store.load_snapshot(current, SNAPSHOT_NAME) if snapshots else None
        if snapshot is not None and (limit is None or snapshot.version <= limit):
            loaded = _load_snapshot(store, snapshot)
            if loaded is not None:
                history, usage = loaded
                after = snapshot.version
        events = store.read(current, after_version=after, to_version=limit)
        if check_erasure:
            if after and any(isinstance(event.data, ContentErased) for event in events):
                return fold_events(
                    store,
                    conversation_id,
                    to_version=to_version,
                    use_snapshot=False,
                    check_erasure=True,
                )
            pending = erasure_pending(events)
            if pending:
                raise ErasurePending(
                    f"{current} holds a content_erased event, but its versions "
                    f"{', '.join(map(str, pending[:10]))} still hold content: an erasure is "
                    "under way, or was interrupted (then run `chatledger erase` again)"
                )
        if not chain:
            used = after
        chain.append((history, usage, events))
        if after:
            break
        if len(chain) > 1 and (not events or events[-1].version != limit):
            # A fork's parent, gone from the log or cut short of the fork point.
            raise IntegrityError(
                f"{keys[-2][0]} was forked from {current} v{limit}, which is not in "
                f"{store.location}; run verify"
            )
        if not events:
            raise NotFoundError(
                f"no conversation {current!r} in {store.location}; "
                "list them with client.chats.list() or `chatledger ls`"
            )
        first = events[0].data
        if not isinstance(first, ConversationStarted) or first.parent is None:
            break
        current, limit, snapshots = first.parent.conversation_id, first.parent.version, True
    history, usage, _ = chain[-1]
    for index in range(len(chain) - 1, -1, -1):
        if index < len(chain) - 1:
            history.pending = None  # a fork starts with no turn open
        for event in chain[index][2]:
            history_projection.apply(history, check_shape(event))
            usage_projection.apply(usage, event)
        if cache is not None and chain[index][2]:
            cache[keys[index]] = (history.copy(), copy.deepcopy(usage))
    return history, usage, used


def _load_snapshot(store: EventStore, snapshot: Snapshot) -> tuple[HistoryState, UsageState] | None:
    try:
        decoded = _SNAPSHOT_DECODER.decode(snapshot.state)
        if decoded.format != SNAPSHOT_FORMAT:
            return None
        history = _restore(decoded)
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError, RecursionError):
        logger.warning("ignoring an unreadable snapshot of %s", snapshot.conversation_id)
        return None
    anchor = store.read(
        snapshot.conversation_id, after_version=snapshot.version - 1, to_version=snapshot.version
    )
    if not anchor or anchor[0].hash != decoded.hash:
        logger.warning(
            "ignoring a snapshot of %s that does not match its log", snapshot.conversation_id
        )
        return None
    return history, decoded.usage
