"""Replay debugging: re-run recorded conversations offline, and re-run them elsewhere.

:class:`ReplayTransport` serves a conversation's recorded model replies, in order, to any
client code, and compares each request that code builds with the one recorded: the
first difference (turn, field, recorded value, new value) is reported precisely. The
recorded requests are rebuilt from the log by the same projections a live chat uses,
and each is checked against the contents digest recorded with the original call.

:func:`replay_conversation` drives that check with the log's own messages (did this
version of chatledger, with this config, build the same requests?). ``Chat.rerun``
re-sends a conversation's user messages to another model or config, as a fork.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import msgspec

from ..errors import (
    APIError,
    ChatledgerError,
    ChatStateError,
    IntegrityError,
    ModelConnectionError,
    ModelTimeoutError,
    NotFoundError,
    ReplayMismatchError,
)
from ..events.envelope import RecordedEvent
from ..events.kinds import (
    ConversationStarted,
    ErrorInfo,
    FunctionResponded,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    TurnRewound,
    UserMessageAdded,
)
from ..events.store import EventStore
from ..projections import history as history_projection
from ..projections.history import HistoryState, sendable
from ..types import Part
from ._chat import Chat
from ._client import Client
from ._convert import content_from_wire, contents_digest, merge_configs, request_config
from ._fold import check_shape
from .transports.base import ModelRequest, Transport

__all__ = [
    "Difference",
    "RecordedCall",
    "ReplayReport",
    "ReplayTransport",
    "recorded_calls",
    "replay_conversation",
]


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """Where a new request departs from the recorded one."""

    turn: int
    call: int
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return (
            f"turn {self.turn} (model call {self.call}), {self.field}: "
            f"recorded {_short(self.old)}, now {_short(self.new)}"
        )


def _short(value: Any, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class RecordedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded model call: the request as rebuilt from the log, and its outcome."""

    turn: int
    call: int
    version: int
    model: str
    streamed: bool
    contents: list[dict[str, Any]]
    config: dict[str, Any]
    response: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    #: False when the rebuilt contents do not hash to the digest recorded at the time.
    digest_matches: bool = True


def _lineage_events(store: EventStore, conversation_id: str) -> list[RecordedEvent]:
    """A conversation's events with its ancestors' prefixes first (forks included).

    Ancestors are found from each fork's own first event (hashed), as an export finds
    them (docs/branching.md). A fork whose parent is missing, ends before the fork point
    or has another event there, and a chain of parents that comes back on itself (a
    damaged log), raise :class:`IntegrityError` naming it instead of looping.
    """
    chain: list[list[RecordedEvent]] = []
    seen: set[str] = set()
    current, fork_point = conversation_id, None
    while True:
        if current in seen:
            raise IntegrityError(f"conversation {current} is its own ancestor; run verify")
        seen.add(current)
        limit = fork_point.version if fork_point is not None else None
        events = store.read(current, to_version=limit)
        if fork_point is None:
            if not events:
                raise NotFoundError(f"no conversation {current!r} in {store.location}")
        elif len(events) < fork_point.version or events[-1].hash != fork_point.hash:
            what = (
                f"which is not in {store.location}"
                if len(events) < fork_point.version
                else "whose event there has another hash"
            )
            raise IntegrityError(
                f"{chain[-1][0].conversation_id} was forked from {current} "
                f"v{fork_point.version}, {what}; run verify"
            )
        chain.append(events)
        first = events[0].data
        if not isinstance(first, ConversationStarted) or first.parent is None:
            break
        current, fork_point = first.parent.conversation_id, first.parent
    return [event for events in reversed(chain) for event in events]


def recorded_calls(store: EventStore, conversation_id: str) -> list[RecordedCall]:
    """Every model call of a conversation (and of its ancestors, for a fork), in order."""
    state = HistoryState()
    calls: list[RecordedCall] = []
    open_calls: dict[int, int] = {}  # turn -> index in calls of its latest call
    last_call: dict[int, int] = {}  # turn -> index of its latest call, answered or not
    for event in _lineage_events(store, conversation_id):
        data = event.data
        if isinstance(data, ConversationStarted) and data.parent is not None:
            # A fork starts with its parent's state at the fork point, open turn dropped.
            state.pending = None
            open_calls.clear()
            last_call.clear()
        if isinstance(data, ModelCallStarted) and state.pending is not None:
            pending = state.pending
            previous = (
                calls[last_call[data.turn]]
                if data.continuation_token is not None and data.turn in last_call
                else None
            )
            if previous is not None:
                # A continuation hop: its call's contents, and the token.
                contents = previous.contents
            elif pending.steps:
                contents = sendable(
                    [
                        *state.context,
                        *state.turn_contents(),
                        {"role": "user", "parts": list(pending.function_responses)},
                    ]
                )
            else:
                contents = sendable([*state.context, pending.user_input], keep_last=True)
            config = request_config(merge_configs(state.config, data.config))
            if data.continuation_token is not None:
                config["continuationToken"] = data.continuation_token
            calls.append(
                RecordedCall(
                    turn=data.turn,
                    call=len(calls) + 1,
                    version=event.version,
                    model=data.model,
                    streamed=data.streamed,
                    contents=contents,
                    config=config,
                    digest_matches=not data.contents_sha256
                    or contents_digest(contents) == data.contents_sha256,
                )
            )
            open_calls[data.turn] = last_call[data.turn] = len(calls) - 1
        elif isinstance(data, ModelResponded | ModelCallFailed) and data.turn in open_calls:
            index = open_calls.pop(data.turn)
            outcome: dict[str, Any] = (
                {"response": data.response}
                if isinstance(data, ModelResponded)
                else {"error": data.error, "response": data.partial}
            )
            calls[index] = msgspec.structs.replace(calls[index], **outcome)
        history_projection.apply(state, check_shape(event))
    return calls


def _diff(old: Any, new: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first place where two JSON values differ, as (path, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in new:
                return f"{path}.{key}", old[key], None
            if key not in old:
                return f"{path}.{key}", None, new[key]
            found = _diff(old[key], new[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for index, (a, b) in enumerate(zip(old, new, strict=False)):
            found = _diff(a, b, f"{path}[{index}]")
            if found:
                return found
        if len(old) != len(new):
            index = min(len(old), len(new))
            return (
                f"{path}[{index}]",
                old[index] if index < len(old) else None,
                new[index] if index < len(new) else None,
            )
        return None
    if old != new or type(old) is not type(new):
        return path, old, new
    return None


def compare(call: RecordedCall, request: ModelRequest) -> Difference | None:
    """The first difference between a recorded call and a new request, or None."""
    for found in (
        ("model", call.model, request.model) if call.model != request.model else None,
        _diff(call.contents, request.contents, "contents"),
        _diff(call.config, request.config, "config"),
    ):
        if found is not None:
            field, old, new = found
            return Difference(turn=call.turn, call=call.call, field=field, old=old, new=new)
    return None


def _recorded_error(error: ErrorInfo) -> ChatledgerError:
    if error.code:
        body = {"error": {"code": error.code, "message": error.message, "status": error.status}}
        return APIError.from_status(error.code, body)
    if "Timeout" in error.kind:
        return ModelTimeoutError(error.message)
    return ModelConnectionError(f"(replayed) {error.kind}: {error.message}")


class ReplayTransport(Transport):
    """Serves a recorded conversation's model replies and checks each request.

    ``strict`` (default): the first request that differs raises ReplayMismatchError.
    Otherwise differences are collected in ``differences`` and replay goes on.
    """

    name = "replay"

    def __init__(self, calls: list[RecordedCall], *, strict: bool = True) -> None:
        self.calls = calls
        self.strict = strict
        self.differences: list[Difference] = []
        self._next = 0
        self._lock = threading.Lock()

    @classmethod
    def from_log(
        cls, store: EventStore, conversation_id: str, *, strict: bool = True
    ) -> ReplayTransport:
        return cls(recorded_calls(store, conversation_id), strict=strict)

    @property
    def remaining(self) -> int:
        """Recorded calls not replayed yet."""
        return len(self.calls) - self._next

    def _serve(self, request: ModelRequest) -> RecordedCall:
        with self._lock:
            if self._next >= len(self.calls):
                last = self.calls[-1] if self.calls else None
                extra = Difference(
                    turn=(last.turn + 1) if last else 1,
                    call=len(self.calls) + 1,
                    field="(call)",
                    old=None,
                    new=f"an extra request to {request.model}",
                )
                self.differences.append(extra)
                raise ReplayMismatchError(extra)
            call = self.calls[self._next]
            self._next += 1
        difference = compare(call, request)
        if difference is not None:
            self.differences.append(difference)
            if self.strict:
                raise ReplayMismatchError(difference)
        return call

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        call = self._serve(request)
        if call.error is not None:
            raise _recorded_error(call.error)
        return call.response or {}

    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]:
        call = self._serve(request)
        if call.response:
            yield call.response
        if call.error is not None and call.error.kind != "abandoned":
            raise _recorded_error(call.error)


class ReplayReport(msgspec.Struct, kw_only=True):
    """The outcome of :func:`replay_conversation`."""

    conversation_id: str
    calls: int
    replayed: int
    differences: list[Difference]
    #: Calls whose rebuilt request does not hash to the digest recorded at the time.
    digest_mismatches: list[int]

    @property
    def ok(self) -> bool:
        return not self.differences and not self.digest_mismatches and self.replayed == self.calls


def replay_conversation(store: EventStore, conversation_id: str) -> ReplayReport:
    """Re-send a conversation's recorded messages through a fresh chat that is served by a
    :class:`ReplayTransport`: a check that the requests built now match the log."""
    events = _lineage_events(store, conversation_id)
    erased = [event for event in events if event.erased]
    if erased:
        shown = ", ".join(f"{e.conversation_id} v{e.version}" for e in erased[:5])
        raise ChatStateError(
            f"conversation {conversation_id} cannot be replayed: the content of "
            f"{len(erased)} of its events was erased ({shown}{', ...' if len(erased) > 5 else ''}), "
            "and a replay re-sends the recorded messages (docs/erasure.md)"
        )
    calls = recorded_calls(store, conversation_id)
    transport = ReplayTransport(calls, strict=False)
    root = events[0].data
    assert isinstance(root, ConversationStarted)
    # Recorded retries are replayed as retries: the same number of attempts, no waiting.
    attempts = max(
        (e.data.attempt for e in events if isinstance(e.data, ModelCallStarted)), default=1
    )
    retry = (
        {"attempts": attempts, "initial_delay": 0, "max_delay": 0, "jitter": 0}
        if attempts > 1
        else None
    )
    with Client(
        store=":memory:",
        transport=transport,
        actor="replay",
        http_options={"retry_options": retry} if retry else None,
    ) as scratch:
        chat = scratch.chats.create(model=root.model, config=root.config, history=root.history)
        _drive(chat, events)
    return ReplayReport(
        conversation_id=conversation_id,
        calls=len(calls),
        replayed=len(calls) - transport.remaining,
        differences=transport.differences,
        digest_mismatches=[call.call for call in calls if not call.digest_matches],
    )


def _drive(chat: Chat, events: list[RecordedEvent]) -> None:
    """Repeat what the recorded caller did: its messages (streamed or not, abandoned or
    not), its rewinds, and, for automatic function calling, the recorded function results
    sent back as answers (the replay chat only has the functions' declarations)."""
    turns: dict[int, list[Any]] = {}
    for event in events:
        turn = getattr(event.data, "turn", None)
        if isinstance(turn, int) and not isinstance(event.data, TurnRewound):
            turns.setdefault(turn, []).append(event.data)
    for event in events:
        data = event.data
        if isinstance(data, TurnRewound):
            with contextlib.suppress(ChatledgerError):
                chat.rewind()
            continue
        if not isinstance(data, UserMessageAdded):
            continue
        # Split the turn at its model calls: rounds[i] answers call i.
        calls: list[ModelCallStarted] = []
        rounds: list[list[FunctionResponded]] = []
        abandoned = False
        for item in turns.get(data.turn, []):
            if isinstance(item, ModelCallStarted) and item.continuation_token is not None:
                continue  # a continuation hop: the chat sends it by itself
            if isinstance(item, ModelCallStarted):
                calls.append(item)
                rounds.append([])
            elif isinstance(item, FunctionResponded) and rounds:
                rounds[-1].append(item)
            elif isinstance(item, ModelCallFailed) and item.error.kind == "abandoned":
                abandoned = True
        # A content the log should not hold is an IntegrityError, not a crash.
        parts = content_from_wire(data.content).parts or []
        message: Any = parts[0] if data.content.get("role") != "user" and parts else parts
        streamed = bool(calls) and calls[0].streamed
        # The per-message config the caller gave (recorded with the turn's first call).
        config = calls[0].config if calls else None
        _send(chat, message, config, streamed, abandoned and len(calls) == 1)
        for index in range(1, len(calls)):
            answers = [
                Part.from_function_response(name=r.name, response=r.response, id=r.call_id)
                for r in sorted(rounds[index - 1], key=lambda r: r.index)
            ]
            if not answers:
                break
            _send(
                chat, answers, config, calls[index].streamed, abandoned and index == len(calls) - 1
            )


def _send(
    chat: Chat, message: Any, config: dict[str, Any] | None, streamed: bool, abandon: bool
) -> None:
    try:
        if streamed:
            stream = chat.send_message_stream(message, config=config)
            try:
                for _ in stream:
                    if abandon:
                        break
            finally:
                stream.close()
        else:
            chat.send_message(message, config=config)
    except ChatledgerError:
        pass  # a recorded failure, replayed
