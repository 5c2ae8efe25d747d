"""``Chat`` and ``AsyncChat``: google-genai's chat surface over the event log.

Both drive the same :class:`Conversation` (which owns state and log writes); they only
differ in how they wait: the sync chat blocks, the async chat awaits the transport and
runs the short log writes in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from ..errors import ChatStateError
from ..events.envelope import RecordedEvent
from ..events.kinds import ParentRef
from ..events.store import VerificationReport
from ..projections.history import HistoryState, sendable
from ..projections.usage import UsageState
from ..types import (
    Content,
    GenerateContentConfig,
    GenerateContentConfigOrDict,
    GenerateContentResponse,
    PartUnionDict,
)
from ._continuation import HopOutcome, StreamHops
from ._conversation import Conversation, Turn
from ._convert import (
    config_to_wire,
    content_from_wire,
    history_from_wire,
    message_to_content,
    parse_config,
    response_from_wire,
    stored_config,
)
from ._fold import verify_log
from ._functions import (
    declare,
    function_map,
    run_function,
    run_function_async,
    unknown_function,
)
from ._listing import list_conversations
from ._schema import parse_response
from ._stream import StreamMerger
from ._summaries import ChatSummary

__all__ = ["AsyncChat", "Chat"]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _final_response(
    turn: Turn, raw: dict[str, Any], response: GenerateContentResponse
) -> GenerateContentResponse:
    """What ``send_message`` returns: the response, or a continued answer's hops merged
    (docs/chat-api.md#continuation)."""
    if turn.final is not None and turn.final is not raw:
        response = response_from_wire(turn.final)
        if response.usage_metadata is not None and turn.initial_prompt_tokens is not None:
            response.usage_metadata._initial_prompt_token_count = turn.initial_prompt_tokens
    parse_response(response, *turn.schemas)
    return response


def _shown_chunk(turn: Turn, hops: StreamHops, raw: dict[str, Any]) -> GenerateContentResponse:
    """A stream chunk as the caller sees it: intermediate CONTINUATION cleared, usage
    summed over the hops so far (the log keeps the chunk as it came), and, as in
    google-genai, ``parsed`` read from the chunk's own text."""
    chunk = response_from_wire(hops.observe(raw))
    if chunk.usage_metadata is not None and hops.initial_prompt_tokens is not None:
        chunk.usage_metadata._initial_prompt_token_count = hops.initial_prompt_tokens
    parse_response(chunk, *turn.schemas)
    return chunk


def _record_hop(
    conversation: Conversation,
    turn: Turn,
    merger: StreamMerger,
    outcome: HopOutcome,
    error: Exception | None,
    latency_ms: float,
) -> list[dict[str, Any]] | None:
    """Record how a streamed hop ended; return the function calls to run, if any.

    Resumed: the hop (its reply so far) is recorded as continued. An error to raise:
    the failure ends the turn. Otherwise the hop's reply ends the model call.
    """
    if outcome.token is not None:
        if error is not None:
            conversation.record_hop_failure(
                turn, error, latency_ms=latency_ms, partial=merger.merged()
            )
        else:
            conversation.record_response(
                turn,
                merger.merged(),
                latency_ms=latency_ms,
                chunks=merger.chunks,
                resume=outcome.token,
                first_chunk_at=merger.first_chunk_at,
            )
        return None
    if outcome.error is not None:
        conversation.failed(
            turn,
            outcome.error,
            latency_ms=latency_ms,
            partial=merger.merged() if merger.chunks else None,
            retry=False,
        )
        raise outcome.error
    return conversation.record_response(
        turn,
        merger.merged(),
        latency_ms=latency_ms,
        chunks=merger.chunks,
        resume=None,
        first_chunk_at=merger.first_chunk_at,
    )


class _BaseChat:
    """What both chats share: identity, histories, and message preparation."""

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id!r} model={self.model!r} "
            f"version={self.version} turns={len(self._conversation.history.turns)}>"
        )

    @property
    def id(self) -> str:
        """The conversation id (its stream in the log)."""
        return self._conversation.id

    @property
    def model(self) -> str:
        return self._conversation.history.model

    @property
    def version(self) -> int:
        """The version of the last event this chat has applied."""
        return self._conversation.version

    @property
    def config(self) -> GenerateContentConfig | None:
        """The chat's default config as recorded (Python functions appear as declarations)."""
        if self._conversation.live_config is not None:
            return self._conversation.live_config
        wire = self._conversation.history.config
        return stored_config(wire) if wire else None

    @property
    def usage(self) -> UsageState:
        """Turns, model calls and token totals so far."""
        return self._conversation.usage

    def get_history(self, curated: bool = False, *, as_of: int | None = None) -> list[Content]:
        """The full history, or with ``curated=True`` only the user messages and model
        replies of valid turns, without function call steps. Always a copy.

        ``as_of``: the history as it was at that version of the log (time travel; no
        model is called)."""
        return history_from_wire(self._history_at(as_of), "curated" if curated else "full")

    def get_context(self, *, as_of: int | None = None) -> list[Content]:
        """What the next request sends before the new message (google-genai's curated
        history, without function calls that have no response); ``as_of`` as above."""
        history = self._history_at(as_of)
        # The classes of google-genai's curated history (a sent message: UserContent).
        classes = {
            id(wire): type(typed)
            for wire, typed in zip(
                history.context, history_from_wire(history, "context"), strict=True
            )
        }
        return [
            content_from_wire(content, classes.get(id(content), Content))
            for content in sendable(history.context)
        ]

    def _history_at(self, as_of: int | None) -> HistoryState:
        if as_of is None:
            return self._conversation.history
        return self._conversation.state_at(as_of)[0]

    @property
    def parent(self) -> ParentRef | None:
        """Where this conversation was forked from (conversation id, version, hash), or None."""
        return self._conversation.history.parent

    def _rerun_messages(self) -> list[Any]:
        """The messages that opened this stream's own completed turns, as Parts."""
        conversation = self._conversation
        conversation.catch_up()
        history = conversation.history
        # Turns present at version 1 came with the start (initial history, or a parent's).
        inherited = len(conversation.state_at(1)[0].turns)
        messages: list[Any] = []
        offset = 0
        for index, span in enumerate(history.turns):
            if index >= inherited and span.full:
                content = content_from_wire(history.full[offset])
                parts = content.parts or []
                messages.append(parts[0] if content.role != "user" and parts else parts)
            offset += span.full
        return messages

    def _fork_conversation(
        self,
        at: int | None,
        turn: int | None,
        model: str | None,
        config: GenerateContentConfigOrDict | None,
    ) -> Conversation:
        conversation = self._conversation
        version = conversation.fork_version(at, turn)
        live = parse_config(config)
        return conversation.fork(
            version,
            model=model,
            config=config_to_wire(live, declare) if live is not None else None,
            live_config=live,
        )

    @property
    def history(self) -> list[Content]:
        """The full history (the legacy name of ``get_history()``)."""
        return self.get_history()

    @property
    def last(self) -> GenerateContentResponse | None:
        """The response that ended the last turn (merged, for a stream), or None. Its
        ``parsed`` is read from the whole reply with the chat's schema (for a stream,
        the one place the whole reply is parsed: docs/chat-api.md#parsed)."""
        response = self._conversation.history.last_response
        if response is None:
            return None
        last = response_from_wire(response)
        parse_response(last, *self._conversation.schemas())
        return last

    def _prepare(
        self,
        message: list[PartUnionDict] | PartUnionDict,
        config: GenerateContentConfigOrDict | None,
        *,
        is_async: bool,
    ) -> tuple[dict[str, Any], GenerateContentConfig | None, dict[str, Any] | None]:
        content = message_to_content(message)
        override = parse_config(config)
        override_wire = config_to_wire(override, declare) if override is not None else None
        function_map(
            override
            if override is not None and override.tools is not None
            else self._conversation.live_config,
            is_async=is_async,
        )
        return content, override, override_wire


class Chat(_BaseChat):
    """A synchronous chat session whose every step is recorded in the log."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(conversation)
        self._open_stream: tuple[weakref.ReferenceType[Any], int] | None = None

    def _close_open_stream(self) -> None:
        # A stream this thread left suspended is abandoned by the next send.
        if self._open_stream is None:
            return
        ref, thread = self._open_stream
        stream = ref()
        if stream is not None and thread == threading.get_ident() and not stream.gi_running:
            stream.close()
        self._open_stream = None

    def send_message(
        self,
        message: list[PartUnionDict] | PartUnionDict,
        config: GenerateContentConfigOrDict | None = None,
    ) -> GenerateContentResponse:
        """Send ``message`` with the history; return the model's response."""
        content, override, override_wire = self._prepare(message, config, is_async=False)
        self._close_open_stream()
        conversation = self._conversation
        turn = conversation.begin_turn(
            content, override, override_wire, streamed=False, is_async=False
        )
        try:
            while True:
                assert turn.request is not None
                started = time.perf_counter()
                try:
                    with conversation.running_call(turn):
                        raw = conversation.transport().generate(turn.request)
                    response = response_from_wire(raw)
                except BaseException as exc:
                    delay = conversation.failed(turn, exc, latency_ms=_ms_since(started))
                    if delay is None:
                        raise
                    time.sleep(delay)
                    conversation.retry(turn)
                    continue
                calls = conversation.record_response(turn, raw, latency_ms=_ms_since(started))
                if turn.continue_with is not None:
                    conversation.next_hop(turn, turn.continue_with)
                    continue
                if calls is None:
                    return _final_response(turn, raw, response)
                self._run_functions(turn, calls)
                conversation.next_call(turn)
        finally:
            conversation.end_turn(turn)

    def send_message_stream(
        self,
        message: list[PartUnionDict] | PartUnionDict,
        config: GenerateContentConfigOrDict | None = None,
    ) -> Generator[GenerateContentResponse, None, None]:
        """Send ``message``; yield the response chunks as they arrive.

        The history changes once the stream completes. Leaving the loop early (or
        ``close()``) records the abandoned attempt and changes no history.
        """
        content, override, override_wire = self._prepare(message, config, is_async=False)
        self._close_open_stream()
        stream = self._stream(content, override, override_wire)
        self._open_stream = (weakref.ref(stream), threading.get_ident())
        return stream

    def _stream(
        self,
        content: dict[str, Any],
        override: GenerateContentConfig | None,
        override_wire: dict[str, Any] | None,
    ) -> Generator[GenerateContentResponse, None, None]:
        conversation = self._conversation
        turn = conversation.begin_turn(
            content, override, override_wire, streamed=True, is_async=False
        )
        try:
            hops = StreamHops(turn.continuation)
            while True:
                assert turn.request is not None
                merger = StreamMerger()
                started = time.perf_counter()
                hops.start_hop()
                error: Exception | None = None
                try:
                    with contextlib.closing(
                        conversation.transport().stream(turn.request)
                    ) as chunks:  # type: ignore[type-var]
                        for raw in chunks:
                            chunk = _shown_chunk(turn, hops, raw)
                            merger.add(raw)
                            yield chunk
                except GeneratorExit:
                    conversation.record_failure(
                        turn,
                        ChatStateError("the caller closed the stream before it ended"),
                        latency_ms=_ms_since(started),
                        partial=merger.merged() if merger.chunks else None,
                        reason="abandoned",
                    )
                    raise
                except Exception as exc:
                    if merger.chunks:
                        error = exc  # chunks yielded: continuation may resume (below)
                    else:
                        # Nothing yielded yet: the retry policy decides.
                        delay = conversation.failed(turn, exc, latency_ms=_ms_since(started))
                        if delay is None:
                            raise
                        time.sleep(delay)
                        conversation.retry(turn)
                        continue
                except BaseException as exc:
                    conversation.failed(
                        turn,
                        exc,
                        latency_ms=_ms_since(started),
                        partial=merger.merged() if merger.chunks else None,
                        retry=False,
                    )
                    raise
                outcome = hops.end_hop(error)
                calls = _record_hop(conversation, turn, merger, outcome, error, _ms_since(started))
                if outcome.token is not None:
                    conversation.next_hop(turn, outcome.token)
                    continue
                if calls is None:
                    return
                self._run_functions(turn, calls)
                conversation.next_call(turn)
                hops = StreamHops(turn.continuation)
        finally:
            conversation.end_turn(turn)

    def _run_functions(self, turn: Turn, calls: list[dict[str, Any]]) -> None:
        conversation = self._conversation
        for index, call in enumerate(calls):
            conversation.record_function_calls(turn, [(index, call)])
            func = turn.functions.get(str(call.get("name")))
            with conversation.running_function(turn, index):
                outcome = (
                    run_function(func, call["args"]) if func else unknown_function(call.get("name"))
                )
            conversation.record_function_results(turn, [(index, call, outcome)])

    def rewind(self) -> tuple[Content, Content]:
        """Take back the last turn: returns its (user content, model content). The turn
        stays in the log as history, with a ``turn_rewound`` event after it."""
        self._close_open_stream()
        user, model = self._conversation.rewind()
        return content_from_wire(user), content_from_wire(model)

    def refresh(self) -> list[RecordedEvent]:
        """Apply events other writers appended since; return them."""
        return self._conversation.catch_up()

    def fork(
        self,
        at: int | None = None,
        *,
        turn: int | None = None,
        model: str | None = None,
        config: GenerateContentConfigOrDict | None = None,
    ) -> Chat:
        """A new chat whose history is this one's at version ``at`` (default: now), or
        after its first ``turn`` turns, going its own way from there. Nothing is copied:
        the fork's first event names this conversation, the version and its hash.
        ``model`` / ``config`` replace this chat's for the fork."""
        self._close_open_stream()
        return Chat(self._fork_conversation(at, turn, model, config))

    def branches(self) -> list[ChatSummary]:
        """The conversations forked directly from this one."""
        return list_conversations(self._conversation.store, parent_id=self.id)

    def rerun(
        self, *, model: str | None = None, config: GenerateContentConfigOrDict | None = None
    ) -> Chat:
        """Re-send this conversation's user messages to ``model`` (and/or with ``config``)
        as a new fork from its start, so the two can be compared side by side."""
        messages = self._rerun_messages()
        fork = self.fork(at=1, model=model, config=config)
        for message in messages:
            fork.send_message(message)
        return fork

    def events(self) -> list[RecordedEvent]:
        """Every event of this conversation, in version order."""
        return self._conversation.store.read(self.id)

    def verify(self) -> VerificationReport:
        """Check this conversation's hash chain and envelope invariants, and that its
        snapshot (if it has one) holds what its events give."""
        return verify_log(self._conversation.store, self.id)


class AsyncChat(_BaseChat):
    """The async twin of :class:`Chat`: the same methods, awaited.

    Its store work runs in worker threads, never on the event loop. A chat that
    ``client.aio.chats.create`` or ``get`` returned from a running loop is *opening*
    until its start is recorded (or its events folded) in a worker thread: its awaited
    methods wait for that first (raising its error, if it failed), and its plain
    properties block until then (see docs/chat-api.md).
    """

    def __init__(self, conversation: Conversation) -> None:
        self._opened: Conversation | None = conversation
        self._ready: concurrent.futures.Future[Conversation] | None = None
        self._id = conversation.id

    @classmethod
    def _opening(
        cls, conversation_id: str, ready: concurrent.futures.Future[Conversation]
    ) -> AsyncChat:
        """A chat whose conversation ``ready`` gives once recorded (or folded)."""
        chat = cls.__new__(cls)
        chat._opened = None
        chat._ready = ready
        chat._id = conversation_id
        return chat

    @property
    def _conversation(self) -> Conversation:  # type: ignore[override]
        ready = self._ready
        if ready is not None:
            # Only a property read right after create/get waits here; raises its error.
            self._opened = ready.result()
            self._ready = None
        assert self._opened is not None
        return self._opened

    @property
    def id(self) -> str:
        """The conversation id (its stream in the log)."""
        return self._id

    async def _open(self) -> Conversation:
        """The conversation, once opened (awaited without blocking the loop)."""
        ready = self._ready
        if ready is not None:
            # shield: a cancelled caller must not cancel the opening shared by later calls.
            await asyncio.shield(asyncio.wrap_future(ready))
        return self._conversation

    async def send_message(
        self,
        message: list[PartUnionDict] | PartUnionDict,
        config: GenerateContentConfigOrDict | None = None,
    ) -> GenerateContentResponse:
        conversation = await self._open()
        content, override, override_wire = self._prepare(message, config, is_async=True)
        turn = await asyncio.to_thread(
            conversation.begin_turn, content, override, override_wire, streamed=False, is_async=True
        )
        try:
            while True:
                assert turn.request is not None
                started = time.perf_counter()
                try:
                    with conversation.running_call(turn):
                        raw = await conversation.transport().agenerate(turn.request)
                    response = response_from_wire(raw)
                except BaseException as exc:
                    delay = await _record_failed(
                        conversation, turn, exc, latency_ms=_ms_since(started)
                    )
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
                    await asyncio.to_thread(conversation.retry, turn)
                    continue
                calls = await asyncio.to_thread(
                    conversation.record_response, turn, raw, latency_ms=_ms_since(started)
                )
                if turn.continue_with is not None:
                    await asyncio.to_thread(conversation.next_hop, turn, turn.continue_with)
                    continue
                if calls is None:
                    return _final_response(turn, raw, response)
                await self._run_functions(turn, calls)
                await asyncio.to_thread(conversation.next_call, turn)
        finally:
            conversation.end_turn(turn)

    async def send_message_stream(
        self,
        message: list[PartUnionDict] | PartUnionDict,
        config: GenerateContentConfigOrDict | None = None,
    ) -> AsyncIterator[GenerateContentResponse]:
        """Send ``message``; ``async for`` over the result yields chunks as they arrive."""
        await self._open()
        content, override, override_wire = self._prepare(message, config, is_async=True)
        return self._stream(content, override, override_wire)

    async def _stream(
        self,
        content: dict[str, Any],
        override: GenerateContentConfig | None,
        override_wire: dict[str, Any] | None,
    ) -> AsyncIterator[GenerateContentResponse]:
        conversation = self._conversation
        turn = await asyncio.to_thread(
            conversation.begin_turn, content, override, override_wire, streamed=True, is_async=True
        )
        try:
            hops = StreamHops(turn.continuation)
            while True:
                assert turn.request is not None
                merger = StreamMerger()
                started = time.perf_counter()
                hops.start_hop()
                error: Exception | None = None
                chunks = conversation.transport().astream(turn.request)
                try:
                    async for raw in chunks:
                        chunk = _shown_chunk(turn, hops, raw)
                        merger.add(raw)
                        yield chunk
                except GeneratorExit:
                    await _aclose_quietly(chunks)
                    await _off_loop(
                        conversation.record_failure,
                        turn,
                        ChatStateError("the caller closed the stream before it ended"),
                        latency_ms=_ms_since(started),
                        partial=merger.merged() if merger.chunks else None,
                        reason="abandoned",
                    )
                    raise
                except Exception as exc:
                    await _aclose_quietly(chunks)
                    if merger.chunks:
                        error = exc  # chunks yielded: continuation may resume (below)
                    else:
                        delay = await _record_failed(
                            conversation, turn, exc, latency_ms=_ms_since(started)
                        )
                        if delay is None:
                            raise
                        await asyncio.sleep(delay)
                        await asyncio.to_thread(conversation.retry, turn)
                        continue
                except BaseException as exc:
                    await _aclose_quietly(chunks)
                    await _record_failed(
                        conversation,
                        turn,
                        exc,
                        latency_ms=_ms_since(started),
                        partial=merger.merged() if merger.chunks else None,
                        retry=False,
                    )
                    raise
                outcome = hops.end_hop(error)
                calls = await asyncio.to_thread(
                    _record_hop, conversation, turn, merger, outcome, error, _ms_since(started)
                )
                if outcome.token is not None:
                    await asyncio.to_thread(conversation.next_hop, turn, outcome.token)
                    continue
                if calls is None:
                    return
                await self._run_functions(turn, calls)
                await asyncio.to_thread(conversation.next_call, turn)
                hops = StreamHops(turn.continuation)
        finally:
            conversation.end_turn(turn)

    async def _run_functions(self, turn: Turn, calls: list[dict[str, Any]]) -> None:
        # The calls of one response run concurrently; their events keep the model's order.
        conversation = self._conversation
        indexed = list(enumerate(calls))
        await asyncio.to_thread(conversation.record_function_calls, turn, indexed)

        async def call_one(index: int, call: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
            func = turn.functions.get(str(call.get("name")))
            if func is None:
                return index, call, unknown_function(call.get("name"))
            with conversation.running_function(turn, index):
                return index, call, await run_function_async(func, call.get("args") or {})

        results = await asyncio.gather(*(call_one(index, call) for index, call in indexed))
        await asyncio.to_thread(conversation.record_function_results, turn, list(results))

    async def rewind(self) -> tuple[Content, Content]:
        user, model = await asyncio.to_thread((await self._open()).rewind)
        return content_from_wire(user), content_from_wire(model)

    async def refresh(self) -> list[RecordedEvent]:
        return await asyncio.to_thread((await self._open()).catch_up)

    async def fork(
        self,
        at: int | None = None,
        *,
        turn: int | None = None,
        model: str | None = None,
        config: GenerateContentConfigOrDict | None = None,
    ) -> AsyncChat:
        """As :meth:`Chat.fork`."""
        await self._open()
        conversation = await asyncio.to_thread(self._fork_conversation, at, turn, model, config)
        return AsyncChat(conversation)

    async def branches(self) -> list[ChatSummary]:
        conversation = await self._open()
        return await asyncio.to_thread(list_conversations, conversation.store, parent_id=self.id)

    async def rerun(
        self, *, model: str | None = None, config: GenerateContentConfigOrDict | None = None
    ) -> AsyncChat:
        """As :meth:`Chat.rerun`."""
        await self._open()
        messages = await asyncio.to_thread(self._rerun_messages)
        fork = await self.fork(at=1, model=model, config=config)
        for message in messages:
            await fork.send_message(message)
        return fork

    async def events(self) -> list[RecordedEvent]:
        conversation = await self._open()
        return await asyncio.to_thread(conversation.store.read, self.id)

    async def verify(self) -> VerificationReport:
        conversation = await self._open()
        return await asyncio.to_thread(verify_log, conversation.store, self.id)


async def _off_loop(work: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``work`` in a worker thread; on the loop's thread only when the loop can no longer
    run one (it is shutting down, closing the caller's streams)."""
    try:
        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, work, *args, **kwargs)
        )
    except RuntimeError:
        work(*args, **kwargs)
        return
    await future


async def _record_failed(
    conversation: Conversation,
    turn: Turn,
    error: BaseException,
    *,
    latency_ms: float,
    partial: dict[str, Any] | None = None,
    retry: bool = True,
) -> float | None:
    """:meth:`Conversation.failed` in a worker thread; on the loop only for a cancelled or
    interrupted call (awaiting then could be cancelled in turn, losing the record)."""
    if not isinstance(error, Exception):
        return conversation.failed(turn, error, latency_ms=latency_ms, partial=partial, retry=retry)
    return await asyncio.to_thread(
        conversation.failed, turn, error, latency_ms=latency_ms, partial=partial, retry=retry
    )


async def _aclose_quietly(chunks: AsyncIterator[Any]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
