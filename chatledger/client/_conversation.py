"""One conversation's live state and its log I/O, shared by the sync and async chats.

A send is: catch up on events appended since the known version (another process may
have written) -> open a turn (append the user message and the model call with
``expected_version``) -> call the model -> append the reply or the failure -> advance
the projections. The projections live in memory between sends, so a send reads only
the events that are new to it.

Turns never interleave. A turn is open from its ``user_message_added`` event until a
response or failure ends it. A writer that finds another's turn open waits for it (up
to ``busy_timeout``) and then raises :class:`ConversationBusyError`; a turn whose writer
is gone (its process died on this host, or its lease ran out) is closed with a
``turn_abandoned`` event, so a crash never blocks a conversation for good.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import datetime as _dt
import getpass
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from .._version import __version__
from ..errors import (
    ChatledgerError,
    ChatStateError,
    ConcurrencyError,
    ConversationBusyError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from ..events.envelope import NewEvent, RecordedEvent, safe_text
from ..events.kinds import (
    ConversationStarted,
    ErrorInfo,
    EventData,
    FunctionCalled,
    FunctionResponded,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    ParentRef,
    TurnAbandoned,
    TurnRewound,
    UserMessageAdded,
    shape_problem,
)
from ..events.store import EventStore, Problem, Snapshot, VerificationReport
from ..projections import history as history_projection
from ..projections import usage as usage_projection
from ..projections.history import HistoryState, response_content, sendable
from ..projections.usage import UsageState
from ..types import GenerateContentConfig
from ._convert import contents_digest, merge_configs, request_config
from ._functions import FunctionOutcome, afc_budget, function_map
from .transports.base import ModelRequest, Transport

if TYPE_CHECKING:
    from ._client import Client

__all__ = [
    "Conversation",
    "FoldCache",
    "Turn",
    "acting_as",
    "check_shape",
    "fold_events",
    "load_conversation",
    "validate_actor",
    "validate_model",
]

logger = logging.getLogger("chatledger")

SNAPSHOT_NAME = "conversation"
SNAPSHOT_FORMAT = 3
# Folding a few thousand events is as fast as decoding a snapshot of them, so the first
# snapshot waits for SNAPSHOT_EVERY events; later ones come when the log has grown by a
# tenth (at least SNAPSHOT_EVERY events), which bounds both the events a resume folds and
# the bytes snapshots rewrite over a conversation's life (about ten times its history).
SNAPSHOT_EVERY = 2000
SNAPSHOT_GROWTH = 10


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()[:8]
    except OSError:
        return ""


HOST = f"{socket.gethostname()}/{_boot_id()}"

# Turns this process is running now, by (store location, conversation id, turn).
_IN_FLIGHT: set[tuple[str, str, int]] = set()
_IN_FLIGHT_LOCK = threading.Lock()


_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatledger_actor", default=None
)


def validate_actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor or len(actor) > 200 or not actor.isprintable():
        raise InvalidInputError(
            "an actor must be a non-empty printable string of at most 200 characters"
        )
    return actor


MAX_MODEL_NAME = 500


def validate_model(model: object) -> str:
    """A model name: non-empty printable text (it becomes part of a request URL and of
    every model call event)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(f"model must be a non-empty string, got {model!r:.80}")
    if len(model) > MAX_MODEL_NAME or not model.isprintable():
        raise InvalidInputError(
            f"model must be printable text of at most {MAX_MODEL_NAME} characters, "
            f"got {model!r:.80}"
        )
    return model


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record ``actor`` on every event written inside this block (this thread or task),
    instead of the client's actor::

        with chatledger.acting_as("alice@example.com"):
            chat.send_message("...")
    """
    token = _ACTOR.set(validate_actor(actor))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> str | None:
    """The actor :func:`acting_as` set for this thread or task, or None outside such a
    block (events then record the client's actor)."""
    return _ACTOR.get()


def default_actor() -> str:
    """The actor recorded when none is given: the OS user (``uid:N`` without one)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_time(text: str) -> float:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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


def _snapshot(
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
    of the same conversations: what ``chat.verify()`` and ``chatledger verify`` report."""
    report = store.verify(conversation_id)
    ids = (
        [conversation_id]
        if conversation_id
        else [info.conversation_id for info in store.conversations()]
    )
    report.snapshots_checked = check_snapshots(store, ids, report, rebuild=rebuild_snapshots)
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
                _snapshot(conversation_id, snapshot.version, history, usage, anchor[0].hash)
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


FoldCache = dict[tuple[str, int | None], tuple[HistoryState, UsageState]]


def fold_events(
    store: EventStore,
    conversation_id: str,
    *,
    to_version: int | None = None,
    use_snapshot: bool = True,
    cache: FoldCache | None = None,
) -> tuple[HistoryState, UsageState, int]:
    """The projections of a conversation at ``to_version`` (default: its head).

    Starts from a snapshot when one is usable; a fork first folds its parent's prefix
    (and so on up to the root, or to an ancestor with a usable snapshot: iteratively, so
    a chain of forks of any length folds). Returns (history, usage, snapshot version used
    or 0). ``cache`` keeps the state of every (conversation, version) folded on the way,
    so that folding many related conversations (a tree of forks) reads each event once.
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
        if not chain:
            used = after
        chain.append((history, usage, events))
        if after:
            break
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


def load_conversation(
    client: Client, conversation_id: str, live_config: Any = None
) -> Conversation:
    history, usage, snapshot_version = fold_events(client.store, conversation_id)
    conversation = Conversation(client, conversation_id, history, usage, live_config)
    conversation.snapshot_version = snapshot_version
    return conversation


class Turn:
    """One send in progress: its number, config, functions and budget."""

    def __init__(
        self,
        number: int,
        *,
        config: dict[str, Any] | None,
        override: dict[str, Any] | None,
        streamed: bool,
        functions: dict[str, Callable[..., Any]],
        declared_only: set[str],
        budget: int | None,
        is_async: bool = False,
    ) -> None:
        self.number = number
        self.is_async = is_async
        self.config = config
        self.override = override
        self.streamed = streamed
        self.functions = functions
        self.declared_only = declared_only
        self.remaining = budget
        self.request: ModelRequest | None = None
        self.attempt = 1
        self.started = time.perf_counter()
        self.final: dict[str, Any] | None = None


class Conversation:
    """The state of one conversation in this process and every log write it makes.

    Methods are blocking; the async chat runs them in a worker thread. One lock guards
    the in-memory state, so a Conversation may be shared by threads.
    """

    def __init__(
        self,
        client: Client,
        conversation_id: str,
        history: HistoryState,
        usage: UsageState,
        live_config: GenerateContentConfig | None = None,
    ) -> None:
        self.client = client
        self.store: EventStore = client.store
        self.id = conversation_id
        self.history = history
        self.usage = usage
        # The config object the caller gave (it may hold Python functions, which the
        # log records as declarations only).
        self.live_config = live_config
        self.snapshot_version = 0
        self._lock = threading.RLock()
        self._state_at: tuple[int, HistoryState, UsageState] | None = None

    # ----------------------------------------------------------------- reading

    @property
    def version(self) -> int:
        return self.history.version

    def catch_up(self) -> list[RecordedEvent]:
        """Apply the events appended since the known version (by anyone)."""
        with self._lock:
            events = self.store.read(self.id, after_version=self.history.version)
            for event in events:
                history_projection.apply(self.history, check_shape(event))
                usage_projection.apply(self.usage, event)
            if events and self.history.pending is None:
                self._maybe_snapshot(events[-1])
            return events

    def _maybe_snapshot(self, last: RecordedEvent) -> None:
        grown = last.version - self.snapshot_version
        if grown < SNAPSHOT_EVERY or grown * SNAPSHOT_GROWTH < self.snapshot_version:
            return
        snapshot = _snapshot(self.id, last.version, self.history, self.usage, last.hash)
        try:
            self.store.save_snapshot(snapshot)
            self.snapshot_version = last.version
        except StoreError as exc:  # a snapshot is a cache: failing to write one is not fatal
            logger.warning("could not save a snapshot of %s: %s", self.id, exc)

    # ----------------------------------------------------------------- writing

    def _metadata(self, data: EventData) -> dict[str, Any]:
        metadata: dict[str, Any] = {"actor": _ACTOR.get() or self.client.actor}
        if isinstance(data, UserMessageAdded):
            metadata["host"] = HOST
            metadata["pid"] = os.getpid()
        elif isinstance(data, ConversationStarted):
            metadata["library"] = f"chatledger/{__version__}"
        return metadata

    def append(self, datas: list[EventData]) -> None:
        """Append at the known version and apply. Raises ConcurrencyError if stale."""
        with self._lock:
            events = [NewEvent(data=data, metadata=self._metadata(data)) for data in datas]
            self.store.append(self.id, events, expected_version=self.history.version)
            self.catch_up()

    def _append_in_turn(self, turn: Turn, datas: list[EventData]) -> None:
        """Append events of an open turn, even if unrelated events were appended since.

        If the turn was taken over (its lease ran out and another writer abandoned it),
        the events are still recorded for the audit, then ConversationBusyError is raised.
        """
        with self._lock:
            for _ in range(20):
                try:
                    self.append(datas)
                except ConcurrencyError:
                    self.catch_up()
                    pending = self.history.pending
                    if pending is None or pending.turn != turn.number:
                        self._record_orphan(datas)
                        raise ConversationBusyError(
                            f"turn {turn.number} of conversation {self.id} was closed by another "
                            "writer (its lease ran out) before this process finished it; its "
                            "outcome is recorded in the log but not in the history. Send again."
                        ) from None
                    continue
                except (StoreUnavailableError, IntegrityError) as exc:
                    # Locked, full, read-only...: say what became of the turn, and what to do.
                    raise type(exc)(
                        f"{exc}. Turn {turn.number} of conversation {self.id} stays open: its "
                        "user message is in the log, the rest of the turn is not. The next "
                        "send closes it; send the message again"
                    ) from None
                return
            raise ConversationBusyError(
                f"conversation {self.id} is being appended to too fast to record turn {turn.number}"
            )

    def _record_orphan(self, datas: list[EventData]) -> None:
        for _ in range(20):
            try:
                self.append(datas)
                return
            except ConcurrencyError:
                self.catch_up()

    # ----------------------------------------------------------------- turns

    def _judge(self, pending: history_projection.PendingTurn) -> str | None:
        """Why an open turn may be taken over, or None while its writer may still be at it."""
        owner_host = pending.owner.get("host")
        owner_pid = pending.owner.get("pid")
        if owner_host == HOST and isinstance(owner_pid, int):
            if owner_pid == os.getpid():
                key = (self.store.location, self.id, pending.turn)
                with _IN_FLIGHT_LOCK:
                    if key in _IN_FLIGHT:
                        return None
                return "left open by this process, which is no longer running it"
            if not _pid_alive(owner_pid):
                return f"its writer process {owner_pid} on this host is gone"
        last = pending.last_event_at or pending.opened_at
        if time.time() - _parse_time(last) > pending.lease_seconds:
            return f"its lease of {pending.lease_seconds:g} s ran out"
        return None

    def wait_for_turn(self) -> None:
        """Return once no turn is open (closing dead ones); raise when busy too long."""
        deadline = time.monotonic() + self.client.busy_timeout
        delay = 0.01
        while True:
            self.catch_up()
            pending = self.history.pending
            if pending is None:
                return
            reason = self._judge(pending)
            if reason is not None:
                with contextlib.suppress(ConcurrencyError):
                    self.append([TurnAbandoned(turn=pending.turn, reason=reason)])
                continue
            if time.monotonic() >= deadline:
                owner = pending.owner
                raise ConversationBusyError(
                    f"conversation {self.id} has turn {pending.turn} open by "
                    f"{owner.get('actor', 'another writer')} (pid {owner.get('pid')} on "
                    f"{str(owner.get('host', '?')).split('/')[0]}) since {pending.opened_at}; "
                    f"waited {self.client.busy_timeout:g} s. Retry later, or raise the "
                    "client's busy_timeout"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def begin_turn(
        self,
        content: dict[str, Any],
        override: GenerateContentConfig | None,
        override_wire: dict[str, Any] | None,
        *,
        streamed: bool,
        is_async: bool,
    ) -> Turn:
        """Open a turn for ``content`` and record the first model call."""
        live = override if override is not None and override.tools is not None else self.live_config
        functions = function_map(live, is_async=is_async)
        afc_source = (
            override
            if override is not None and override.automatic_function_calling
            else self.live_config
        )
        budget = afc_budget(afc_source) if functions else None
        with self._lock:
            while True:
                self.wait_for_turn()
                config = merge_configs(self.history.config, override_wire)
                turn = Turn(
                    self.history.next_turn,
                    config=config,
                    override=override_wire,
                    streamed=streamed,
                    functions=functions,
                    declared_only=_declared_names(config) - set(functions),
                    budget=budget,
                    is_async=is_async,
                )
                # The new message is sent as given (a function call Part is a model turn).
                contents = sendable([*self.history.context, content], keep_last=True)
                try:
                    self.append(
                        [
                            UserMessageAdded(
                                turn=turn.number,
                                content=content,
                                lease_seconds=self.client.turn_lease,
                            ),
                            self._call_started(turn, contents),
                        ]
                    )
                except ConcurrencyError:
                    continue
                with _IN_FLIGHT_LOCK:
                    _IN_FLIGHT.add((self.store.location, self.id, turn.number))
                turn.request = ModelRequest(
                    model=self.history.model, contents=contents, config=request_config(config)
                )
                return turn

    def end_turn(self, turn: Turn) -> None:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard((self.store.location, self.id, turn.number))

    def _call_started(self, turn: Turn, contents: list[dict[str, Any]]) -> ModelCallStarted:
        return ModelCallStarted(
            turn=turn.number,
            model=self.history.model,
            attempt=turn.attempt,
            streamed=turn.streamed,
            config=turn.override,
            contents_count=len(contents),
            contents_sha256=contents_digest(contents),
            transport=self.client.transport_for(self.history.model).name,
        )

    def transport(self) -> Transport:
        return self.client.transport_for(self.history.model)

    def record_response(
        self, turn: Turn, response: dict[str, Any], *, latency_ms: float, chunks: int = 0
    ) -> list[dict[str, Any]] | None:
        """Record a model response; return the function calls to run next, or None when
        the turn is over (``turn.final`` then holds the response to return)."""
        calls = self._calls_to_run(turn, response)
        self._append_in_turn(
            turn,
            [
                ModelResponded(
                    turn=turn.number,
                    response=response,
                    latency_ms=round(latency_ms, 3),
                    streamed=turn.streamed,
                    chunks=chunks,
                    ends_turn=calls is None,
                )
            ],
        )
        if calls is None:
            turn.final = response
        return calls

    def _calls_to_run(self, turn: Turn, response: dict[str, Any]) -> list[dict[str, Any]] | None:
        # As google-genai 3.3.0's AFC loop, plus: unknown names get an error response.
        if turn.remaining is None or not turn.functions:
            return None
        content = response_content(response)
        parts = content.get("parts") if content else None
        if not parts:
            return None
        turn.remaining -= 1
        if turn.remaining <= 0:
            return None
        # As google-genai: its sync loop skips a call without "args"; its async loop runs
        # it with no arguments.
        calls = [
            part["functionCall"]
            for part in parts
            if isinstance(part, dict)
            and isinstance(part.get("functionCall"), dict)
            and (turn.is_async or part["functionCall"].get("args") is not None)
        ]
        if not calls:
            return None
        if any(call.get("name") in turn.declared_only for call in calls):
            return None  # a declaration-only function: the caller answers it
        return calls

    def record_function_calls(self, turn: Turn, calls: list[tuple[int, dict[str, Any]]]) -> None:
        self._append_in_turn(
            turn,
            [
                FunctionCalled(
                    turn=turn.number,
                    name=str(call.get("name")),
                    args=call.get("args") or {},
                    call_id=call.get("id"),
                    index=index,
                )
                for index, call in calls
            ],
        )

    def record_function_results(
        self, turn: Turn, results: list[tuple[int, dict[str, Any], FunctionOutcome]]
    ) -> None:
        self._append_in_turn(
            turn,
            [
                FunctionResponded(
                    turn=turn.number,
                    name=str(call.get("name")),
                    response=outcome.response,
                    call_id=call.get("id"),
                    index=index,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                )
                for index, call, outcome in results
            ],
        )

    def next_call(self, turn: Turn) -> ModelRequest:
        """Record the next model call of an AFC turn and return its request."""
        with self._lock:
            pending = self.history.pending
            assert pending is not None
            contents = [
                *self.history.context,
                *self.history.turn_contents(),
                {"role": "user", "parts": list(pending.function_responses)},
            ]
            contents = sendable(contents)
            self._append_in_turn(turn, [self._call_started(turn, contents)])
            turn.request = ModelRequest(
                model=self.history.model, contents=contents, config=request_config(turn.config)
            )
            return turn.request

    def record_failure(
        self,
        turn: Turn,
        error: BaseException,
        *,
        latency_ms: float,
        partial: dict[str, Any] | None = None,
        reason: str | None = None,
        ends_turn: bool = True,
    ) -> None:
        """Record that the turn's model call failed; when it ends the turn, the turn
        leaves no history."""
        if isinstance(error, ChatledgerError):
            # For an API error, the server's own message (code and status have fields).
            message = getattr(error, "error_message", None) or str(error)
            info = ErrorInfo(
                kind=reason or type(error).__name__,
                message=safe_text(str(message)[:2000]),
                code=getattr(error, "code", None),
                status=getattr(error, "status", None),
            )
        else:
            info = ErrorInfo(
                kind=reason or type(error).__name__,
                message=safe_text(str(error)[:2000]) or type(error).__name__,
            )
        data = ModelCallFailed(
            turn=turn.number,
            error=info,
            attempt=turn.attempt,
            streamed=turn.streamed,
            partial=partial,
            latency_ms=round(latency_ms, 3),
            ends_turn=ends_turn,
        )
        try:
            self._append_in_turn(turn, [data])
        except ChatledgerError as exc:
            # The original error matters more to the caller; the turn stays open and is
            # closed by the next writer (it is no longer in flight).
            logger.warning(
                "could not record the failure of turn %s of %s: %s", turn.number, self.id, exc
            )

    def failed(
        self,
        turn: Turn,
        error: BaseException,
        *,
        latency_ms: float,
        partial: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> float | None:
        """Record a failed model call. Returns the seconds to wait before retrying it
        (the turn stays open), or None when the turn ends here (the caller re-raises)."""
        policy = self.client.retry_policy
        delay = policy.delay(error, turn.attempt) if policy is not None and retry else None
        self.record_failure(
            turn, error, latency_ms=latency_ms, partial=partial, ends_turn=delay is None
        )
        return delay

    def retry(self, turn: Turn) -> None:
        """Record the next attempt of the turn's current model call (same request)."""
        assert turn.request is not None
        turn.attempt += 1
        self._append_in_turn(turn, [self._call_started(turn, turn.request.contents)])

    # ----------------------------------------------------------------- time travel, forks

    def check_version(self, version: object, *, what: str = "as_of") -> int:
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidInputError(f"{what} must be a version number (an int)")
        if version > self.history.version:
            self.catch_up()
        if not 1 <= version <= self.history.version:
            raise InvalidInputError(
                f"{what}={version} is not a version of conversation {self.id}, which has "
                f"versions 1 to {self.history.version}"
            )
        return version

    def state_at(self, version: int) -> tuple[HistoryState, UsageState]:
        """The projections as they were at ``version`` (no model is called)."""
        version = self.check_version(version)
        if version == self.history.version and self.history.pending is None:
            return self.history, self.usage
        cached = self._state_at
        if cached is None or cached[0] != version:
            history, usage, _ = fold_events(self.store, self.id, to_version=version)
            cached = self._state_at = (version, history, usage)
        return cached[1], cached[2]

    def fork_version(self, at: object, turn: object) -> int:
        """The version to fork at: ``at`` (a version), or after the first ``turn`` turns."""
        self.catch_up()
        if at is not None and turn is not None:
            raise InvalidInputError("fork at= a version or turn= a turn count, not both")
        if turn is not None:
            turns = self.history.turns
            if not isinstance(turn, int) or isinstance(turn, bool) or not 0 <= turn <= len(turns):
                raise InvalidInputError(
                    f"turn must be a count between 0 and {len(turns)} (the turns in the history)"
                )
            return turns[turn - 1].version if turn else 1
        if at is None:
            return self.history.version
        return self.check_version(at, what="at")

    def fork(
        self,
        version: int,
        *,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        live_config: GenerateContentConfig | None = None,
    ) -> Conversation:
        """A new conversation whose history is this one's at ``version``; nothing is copied:
        its first event names this stream, the version and that event's hash."""
        if model is not None:
            validate_model(model)
        anchor = self.store.read(self.id, after_version=version - 1, to_version=version)
        if not anchor:
            raise NotFoundError(f"conversation {self.id} has no version {version}")
        history, usage = self.state_at(version)
        started = ConversationStarted(
            model=model or history.model,
            config=config if config is not None else history.config,
            parent=ParentRef(conversation_id=self.id, version=version, hash=anchor[0].hash),
        )
        fork = Conversation(
            self.client,
            str(uuid.uuid4()),
            history.copy(),
            msgspec.convert(msgspec.to_builtins(usage), UsageState),
            live_config if live_config is not None else self.live_config,
        )
        fork.history.pending = None
        fork.history.version = 0  # the new stream's own versions start at 1
        fork.append([started])
        return fork

    # ----------------------------------------------------------------- rewind

    def rewind(self) -> tuple[dict[str, Any], dict[str, Any]]:
        with self._lock:
            self.wait_for_turn()
            if not self.history.turns:
                raise ChatStateError(
                    f"conversation {self.id} has no turn to rewind: its history is empty"
                )
            span = self.history.turns[-1]
            removed = self.history.full[len(self.history.full) - span.full :]
            try:
                self.append([TurnRewound(turn=span.turn)])
            except ConcurrencyError:
                raise ConversationBusyError(
                    f"conversation {self.id} changed while rewinding; call rewind() again"
                ) from None
            return removed[0], removed[-1]


def _declared_names(config: dict[str, Any] | None) -> set[str]:
    names: set[str] = set()
    for tool in (config or {}).get("tools") or []:
        for declaration in tool.get("functionDeclarations") or [] if isinstance(tool, dict) else []:
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                names.add(declaration["name"])
    return names
