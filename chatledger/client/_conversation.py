"""One conversation's live state and the log writes of its turns, shared by the sync and
async chats.

A send is: open a turn (append the user message and the model call with
``expected_version``, the version this process knows; if another writer appended since,
that append fails, and the send catches up on the new events and tries again) -> call
the model -> append the reply or the failure -> advance the projections. The
projections live in memory between sends, so a send reads only the events that are new
to it, and none when nobody else wrote. Folding and snapshots are in :mod:`._fold`.

Turns never interleave. A turn is open from its ``user_message_added`` event until a
response or failure ends it. A writer that finds another's turn open waits for it (up
to ``busy_timeout``) and then raises :class:`ConversationBusyError`; a turn whose writer
is gone (its process died on this host, or its lease ran out: see :mod:`._leases`) is
closed with a ``turn_abandoned`` event, so a crash never blocks a conversation for good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import msgspec

from .._version import __version__
from ..errors import (
    ChatledgerError,
    ChatStateError,
    ConcurrencyError,
    ConversationBusyError,
    IntegrityError,
    InvalidInputError,
    InvalidResponseError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
)
from ..events.envelope import NewEvent, RecordedEvent, safe_text
from ..events.kinds import (
    ContentErased,
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
)
from ..projections import history as history_projection
from ..projections import usage as usage_projection
from ..projections.continuation import (
    continuation_enabled,
    continuation_token,
    initial_prompt_token_count,
    merge_hops,
)
from ..projections.history import HistoryState, response_content, sendable
from ..projections.usage import UsageState
from ..readmodels.conversations import load_state
from ..types import GenerateContentConfig
from ._convert import contents_digest, merge_configs, request_config
from ._fold import (
    SNAPSHOT_NAME,
    ErasurePending,
    check_shape,
    fold_events,
    make_snapshot,
    snapshot_due,
)
from ._functions import FunctionOutcome, afc_budget, function_map
from ._leases import HOST, IN_FLIGHT, WATCH, bounded_lease, judge_turn
from ._settings import ConversationSettings, current_actor, validate_model
from .transports._http import DEFAULT_MAX_RESPONSE_BYTES
from .transports.base import ModelRequest, Transport

__all__ = ["HOST", "Conversation", "Turn", "load_conversation"]

logger = logging.getLogger("chatledger")

_FROM_RESPONSE: Any = object()

#: The most continuation hops one model call may take (docs/chat-api.md#continuation):
#: a server that never stops asking to continue cannot make a send request forever.
MAX_CONTINUATION_HOPS = 64


def load_conversation(
    settings: ConversationSettings, conversation_id: str, live_config: Any = None
) -> Conversation:
    """A conversation from its read model (docs/stores.md, "Read models"), else folded
    from the log (from its snapshot, when it has a usable one)."""
    loaded = load_state(settings.store, conversation_id)
    if loaded is not None:
        history, usage = loaded
        conversation = Conversation(settings, conversation_id, history, usage, live_config)
        # Resumed without folding: no snapshot is needed until the log grows again.
        conversation.snapshot_version = history.version
        return conversation
    history, usage, snapshot_version = fold_events(settings.store, conversation_id)
    conversation = Conversation(settings, conversation_id, history, usage, live_config)
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
        #: The responses (or stream partials) of the current model call's earlier
        #: continuation hops, and the token the current hop was sent with.
        self.hops: list[dict[str, Any]] = []
        self.hop_token: str | None = None
        #: The token the next hop resumes with, when the last response continues.
        self.continue_with: str | None = None
        self.hops_sent = 0
        #: The first hop's prompt tokens, when ``final`` merges hops.
        self.initial_prompt_tokens: int | None = None
        #: (response_schema, response_json_schema) to read ``parsed`` with.
        self.schemas: tuple[Any, Any] = (None, None)
        # Its spans, when OpenTelemetry is on (chatledger/client/_telemetry.py).
        self.trace: Any = None
        # Function call index -> error.type of a call that failed (for its span).
        self.function_errors: dict[int, str] = {}
        # When the current streamed call's first chunk came (for its span).
        self.first_chunk_at: float | None = None

    @property
    def continuation(self) -> bool:
        """Whether automatic continuation is on for this turn (docs/chat-api.md#continuation)."""
        return continuation_enabled(self.config)


class Conversation:
    """The state of one conversation in this process and every log write it makes.

    Methods are blocking; the async chat runs them in a worker thread. One lock guards
    the in-memory state, so a Conversation may be shared by threads.
    """

    def __init__(
        self,
        settings: ConversationSettings,
        conversation_id: str,
        history: HistoryState,
        usage: UsageState,
        live_config: GenerateContentConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = settings.store
        self.id = conversation_id
        self.history = history
        self.usage = usage
        # The config object the caller gave (it may hold Python functions, which the
        # log records as declarations only).
        self.live_config = live_config
        self.snapshot_version = 0
        #: The subject recorded in the metadata of the conversation's first event, when
        #: this process creates it (docs/erasure.md: erase --subject).
        self.subject: str | None = None
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
            self._apply(events)
            return events

    def _apply(self, events: list[RecordedEvent]) -> None:
        if any(isinstance(event.data, ContentErased) or event.erased for event in events):
            # Another process erased content this state may hold: forget it and fold the
            # log again, which now holds placeholders (docs/erasure.md#open-chats).
            self._refold()
            return
        for event in events:
            history_projection.apply(self.history, check_shape(event))
            usage_projection.apply(self.usage, event)
        if events and self.history.pending is None:
            self._maybe_snapshot(events[-1])

    def _refold(self) -> None:
        """Replace the in-memory state by a fold of the log (without snapshots), once the
        erasure whose ``content_erased`` event was read has replaced the content: it does
        so in a second transaction right after appending that event, so this waits for
        it (up to ``busy_timeout``) rather than keep or resend erased content."""
        deadline = time.monotonic() + max(self.settings.busy_timeout, 1.0)
        delay = 0.01
        while True:
            try:
                history, usage, _ = fold_events(
                    self.store, self.id, use_snapshot=False, check_erasure=True
                )
                break
            except ErasurePending as exc:
                if time.monotonic() >= deadline:
                    raise ErasurePending(
                        f"{exc}; this chat will not send or keep that content: retry once "
                        "the erasure is done"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        self.history, self.usage = history, usage
        self.snapshot_version = 0
        self._state_at = None

    def _maybe_snapshot(self, last: RecordedEvent) -> None:
        """Write a snapshot when one is due, from a fold of the log rather than from the
        in-memory state (which may hold content erased since: docs/erasure.md#open-chats)."""
        if not snapshot_due(self.snapshot_version, last.version):
            return
        try:
            history, usage, _ = fold_events(
                self.store, self.id, to_version=last.version, check_erasure=True
            )
        except ErasurePending:
            return  # an erasure is under way: a later event writes the snapshot
        except ChatledgerError as exc:
            logger.warning("could not fold %s for a snapshot: %s", self.id, exc)
            return
        snapshot = make_snapshot(self.id, last.version, history, usage, last.hash)
        try:
            self.store.save_snapshot(snapshot)
            self.snapshot_version = last.version
            # An erasure that began after the fold read the log (its content_erased event
            # follows ``last``) may have deleted the snapshots before this one was saved.
            later = self.store.read(self.id, after_version=last.version)
            if any(isinstance(event.data, ContentErased) for event in later):
                with self.store._secure_deletes():
                    self.store.delete_snapshot(self.id, SNAPSHOT_NAME)
        except StoreError as exc:  # a snapshot is a cache: failing to write one is not fatal
            logger.warning("could not save a snapshot of %s: %s", self.id, exc)

    # ----------------------------------------------------------------- writing

    def _metadata(self, data: EventData) -> dict[str, Any]:
        metadata: dict[str, Any] = {"actor": current_actor() or self.settings.actor}
        if isinstance(data, UserMessageAdded):
            metadata["host"] = HOST
            metadata["pid"] = os.getpid()
        elif isinstance(data, ConversationStarted):
            metadata["library"] = f"chatledger/{__version__}"
            if self.subject is not None:
                metadata["subject"] = self.subject
        return metadata

    def append(self, datas: list[EventData], turn: Turn | None = None) -> None:
        """Append at the known version and apply. Raises ConcurrencyError if stale.

        The events of a ``turn`` are also spans, when OpenTelemetry is on
        (docs/integrations.md#opentelemetry)."""
        with self._lock:
            events = [NewEvent(data=data, metadata=self._metadata(data)) for data in datas]
            version = self.history.version
            positions = self.store.append(self.id, events, expected_version=version)
            # What was just written, without reading it back (see EventStore.just_appended).
            written = self.store.just_appended(self.id, positions)
            if written is None or written[0].version != version + 1:
                self.catch_up()
            else:
                self._apply(written)
            telemetry = self.settings.telemetry
            if turn is not None and telemetry.enabled:
                telemetry.recorded(self, turn, events, version + 1, positions)

    def _append_in_turn(self, turn: Turn, datas: list[EventData]) -> None:
        """Append events of an open turn, even if unrelated events were appended since.

        If the turn was taken over (its lease ran out and another writer abandoned it),
        the events are still recorded for the audit, then ConversationBusyError is raised.
        """
        with self._lock:
            for _ in range(20):
                try:
                    self.append(datas, turn)
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
        return judge_turn(
            pending, location=self.store.location, conversation_id=self.id, version=self.version
        )

    def wait_for_turn(self) -> None:
        """Return once no turn is open (closing dead ones); raise when busy too long."""
        deadline = time.monotonic() + self.settings.busy_timeout
        delay = 0.01
        while True:
            self.catch_up()
            pending = self.history.pending
            if pending is None:
                WATCH.forget((self.store.location, self.id))
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
                    f"waited {self.settings.busy_timeout:g} s. Others may close it once it has "
                    f"had no event for its lease ({bounded_lease(pending.lease_seconds):g} s). "
                    "Retry later, or raise the client's busy_timeout"
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
        schemas = self.schemas(override)
        with self._lock:
            # With no turn open in this state, the turn's first append is made at the
            # version this chat knows without reading first: the append is the check
            # that nobody else wrote since (it fails on its expected version if anyone
            # did, and nothing of it is written). Only then does the turn read what
            # others appended, wait for their open turn, and begin again.
            known = self.history.pending is None
            while True:
                if known:
                    WATCH.forget((self.store.location, self.id))
                    known = False
                else:
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
                turn.schemas = schemas
                # The new message is sent as given (a function call Part is a model turn).
                contents = sendable([*self.history.context, content], keep_last=True)
                try:
                    self.append(
                        [
                            UserMessageAdded(
                                turn=turn.number,
                                content=content,
                                lease_seconds=self.settings.turn_lease,
                            ),
                            self._call_started(turn, contents),
                        ],
                        turn,
                    )
                except ConcurrencyError:
                    continue
                IN_FLIGHT.add((self.store.location, self.id, turn.number))
                turn.request = ModelRequest(
                    model=self.history.model, contents=contents, config=request_config(config)
                )
                return turn

    def schemas(self, override: GenerateContentConfig | None = None) -> tuple[Any, Any]:
        """The (response_schema, response_json_schema) a send reads ``parsed`` with: the
        per-message config's, else the chat's as given (a class stays a class), else the
        recorded config's (JSON schema dicts) (docs/chat-api.md#parsed)."""
        for config in (override, self.live_config):
            if config is not None and (
                config.response_schema is not None or config.response_json_schema is not None
            ):
                return config.response_schema, config.response_json_schema
        stored = self.history.config or {}
        return stored.get("responseSchema"), stored.get("responseJsonSchema")

    def end_turn(self, turn: Turn) -> None:
        IN_FLIGHT.discard((self.store.location, self.id, turn.number))
        if turn.trace is not None:
            self.settings.telemetry.turn_ended(turn)

    def running_call(self, turn: Turn) -> AbstractContextManager[None]:
        """The context a (non-streamed) model call of ``turn`` runs in: with OpenTelemetry
        on, its ``chat`` span is current there, so that HTTP client spans are its children."""
        return self.settings.telemetry.running_call(turn)

    def running_function(self, turn: Turn, index: int) -> AbstractContextManager[None]:
        """The context the function call ``index`` of ``turn`` runs in: with OpenTelemetry
        on, its ``execute_tool`` span is current there."""
        return self.settings.telemetry.running_function(turn, index)

    def _call_started(self, turn: Turn, contents: list[dict[str, Any]]) -> ModelCallStarted:
        transport = self.settings.transport_for(self.history.model)
        return ModelCallStarted(
            turn=turn.number,
            model=self.history.model,
            attempt=turn.attempt,
            streamed=turn.streamed,
            config=turn.override,
            contents_count=len(contents),
            contents_sha256=contents_digest(contents),
            transport=transport.name,
            endpoint=transport.endpoint_kind,
            continuation_token=turn.hop_token,
        )

    def transport(self) -> Transport:
        return self.settings.transport_for(self.history.model)

    def record_response(
        self,
        turn: Turn,
        response: dict[str, Any],
        *,
        latency_ms: float,
        chunks: int = 0,
        resume: Any = _FROM_RESPONSE,
        first_chunk_at: float | None = None,
    ) -> list[dict[str, Any]] | None:
        """Record a model response; return the function calls to run next, or None when
        the turn is over (``turn.final`` then holds the response to return) or when the
        answer continues (``turn.continue_with`` then holds the token for
        :meth:`next_hop`). ``resume``: the token to continue with, when the caller has
        decided it (a stream); by default it is read from the response.
        ``first_chunk_at``: when a stream's first chunk came (``time.perf_counter()``)."""
        turn.first_chunk_at = first_chunk_at
        if resume is _FROM_RESPONSE:
            token = continuation_token(response) if turn.continuation else None
        else:
            token = resume
        turn.continue_with = token
        if token is not None:
            self._append_in_turn(
                turn,
                [
                    ModelResponded(
                        turn=turn.number,
                        response=response,
                        latency_ms=round(latency_ms, 3),
                        streamed=turn.streamed,
                        chunks=chunks,
                        ends_turn=False,
                        continued=True,
                    )
                ],
            )
            turn.hops.append(response)
            return None
        merged = response
        turn.initial_prompt_tokens = None
        if turn.hops:
            merged = merge_hops([*turn.hops, response])
            turn.initial_prompt_tokens = initial_prompt_token_count([*turn.hops, response])
        turn.hops = []
        calls = self._calls_to_run(turn, merged)
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
            turn.final = merged
        return calls

    def record_hop_failure(
        self, turn: Turn, error: BaseException, *, latency_ms: float, partial: dict[str, Any]
    ) -> None:
        """Record a stream hop that broke after a continuation checkpoint: the next hop
        resumes it, and ``partial`` stays part of the turn's reply."""
        self.record_failure(
            turn, error, latency_ms=latency_ms, partial=partial, ends_turn=False, continued=True
        )
        turn.hops.append(partial)

    def next_hop(self, turn: Turn, token: str) -> ModelRequest:
        """Record the model call that resumes the current answer with ``token``: the same
        contents, the token in the request (as google-genai 3.3.0 sends it)."""
        with self._lock:
            assert turn.request is not None
            turn.hops_sent += 1
            if turn.hops_sent > MAX_CONTINUATION_HOPS:
                error = InvalidResponseError(
                    f"the model asked to continue its answer more than {MAX_CONTINUATION_HOPS} "
                    "times; stopping rather than requesting forever. The hops so far are in "
                    "the log; turn automatic_continuation off to get them one at a time"
                )
                self.record_failure(turn, error, latency_ms=0.0)
                raise error
            turn.hop_token = token
            turn.continue_with = None
            request = turn.request
            config = {**request_config(turn.config), "continuationToken": token}
            self._append_in_turn(turn, [self._call_started(turn, request.contents)])
            turn.request = ModelRequest(
                model=request.model, contents=request.contents, config=config
            )
            return turn.request

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
        if turn.trace is not None:
            for index, _, outcome in results:
                if outcome.error_type is not None:
                    turn.function_errors[index] = outcome.error_type
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
            turn.hop_token = None
            turn.hops_sent = 0
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
        continued: bool = False,
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
        if partial is not None:
            limit = getattr(self.transport(), "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
            partial = bound_partial(partial, limit if isinstance(limit, int) else None)
        data = ModelCallFailed(
            turn=turn.number,
            error=info,
            attempt=turn.attempt,
            streamed=turn.streamed,
            partial=partial,
            latency_ms=round(latency_ms, 3),
            ends_turn=ends_turn,
            continued=continued,
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
        policy = self.settings.retry_policy
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
            self.settings.transport_for(model)  # refused now, not at the fork's first send
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
            self.settings,
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


def bound_partial(partial: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """``partial`` if its JSON fits in ``limit`` bytes (the transport's
    ``max_response_bytes``, the bound of a whole reply); else its first candidate's
    parts cut to fit, with ``chatledgerTruncated`` saying how large it was
    (docs/events.md#kinds). A runaway reply cannot bloat the log."""
    limit = limit if limit is not None and limit > 0 else DEFAULT_MAX_RESPONSE_BYTES
    size = len(msgspec.json.encode(partial))
    if size <= limit:
        return partial
    content = response_content(partial) or {}
    budget = max(0, limit - 1024)  # room for the envelope around the parts
    parts: list[Any] = []
    for part in content.get("parts") or []:
        cost = len(msgspec.json.encode(part))
        if cost <= budget:
            parts.append(part)
            budget -= cost
            continue
        if isinstance(part, dict) and isinstance(part.get("text"), str) and budget > 64:
            text = part["text"].encode("utf-8")[: budget - 64].decode("utf-8", "ignore")
            parts.append({"text": text})
        break
    bounded: dict[str, Any] = {
        "candidates": [{"content": {"role": "model", "parts": parts}}],
        "chatledgerTruncated": {"bytes": size, "limit": limit},
    }
    # Escapes make JSON longer than its text: cut again until it fits.
    while parts and len(msgspec.json.encode(bounded)) > limit:
        last = parts[-1]
        if isinstance(last.get("text"), str) and len(last["text"]) > 1:
            parts[-1] = {"text": last["text"][: len(last["text"]) // 2]}
        else:
            parts.pop()
    return bounded


def _declared_names(config: dict[str, Any] | None) -> set[str]:
    names: set[str] = set()
    for tool in (config or {}).get("tools") or []:
        for declaration in tool.get("functionDeclarations") or [] if isinstance(tool, dict) else []:
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                names.add(declaration["name"])
    return names
