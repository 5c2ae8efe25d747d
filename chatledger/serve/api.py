"""The JSON API under ``/api``: what a chat backend in any language needs.

Every write records the actor of the request's bearer token (or, without tokens, the
server's actor). Errors are ``{"error": {"type": ..., "message": ...}}`` with the
library's own messages. Replies and live events stream as server-sent events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .._version import __version__
from ..client import Chat, acting_as
from ..errors import NotFoundError
from ..events.audit import export_conversation
from ..events.envelope import RecordedEvent, validate_conversation_id
from .audit import report_body
from .catalog import cards_of
from .context import (
    HTTPProblem,
    ServeState,
    api_actor,
    api_writer,
    error_response,
    state_of,
    status_for,
)
from .sends import SendJob, error_body
from .views import common_prefix, turn_rows

__all__ = ["router", "sse"]

router = APIRouter(prefix="/api", tags=["api"])

MAX_EVENTS_PAGE = 1000
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}
}

Reader = Annotated[str, Depends(api_actor)]
Writer = Annotated[str, Depends(api_writer)]


def sse(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    """One server-sent event (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --------------------------------------------------------------------------- shapes


class ErrorDetail(BaseModel):
    type: str = Field(
        description="The error's kind: the library's exception name, or the server's."
    )
    message: str = Field(description="What happened and what to do.")
    upstream_code: int | None = Field(None, description="The model server's HTTP status.")


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "invalid input"},
    401: {"model": ErrorOut, "description": "missing or invalid access token"},
    403: {"model": ErrorOut, "description": "read-only server, or a cross-site request"},
    404: {"model": ErrorOut, "description": "no such conversation"},
    409: {"model": ErrorOut, "description": "the conversation is busy or changed"},
    413: {"model": ErrorOut, "description": "request body too large"},
    502: {"model": ErrorOut, "description": "the model server failed"},
    503: {"model": ErrorOut, "description": "too many sends or followers at once"},
}


class CreateConversation(BaseModel):
    """A new conversation."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        None,
        description="Any model chatledger supports: 'local' (offline SmolLM2), a Gemini model, "
        "'openai/NAME'. Default: the server's default model.",
        max_length=500,
    )
    config: dict[str, Any] | None = Field(
        None,
        description="google-genai's GenerateContentConfig as JSON (system_instruction, "
        "temperature, max_output_tokens, tools with function declarations, ...).",
    )
    history: list[dict[str, Any]] | None = Field(
        None, description="Initial history: contents in wire form ({role, parts})."
    )


class SendMessage(BaseModel):
    """A message to send."""

    model_config = ConfigDict(extra="forbid")
    message: str | list[Any] | dict[str, Any] = Field(
        description="Text, a list of parts, or a content ({role, parts}) in wire form."
    )
    config: dict[str, Any] | None = Field(
        None, description="Per-message config, merged over the conversation's."
    )
    stream: bool = Field(
        False,
        description="Stream the reply as server-sent events (also chosen by "
        "'Accept: text/event-stream').",
    )


class ForkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: int | None = Field(None, ge=1, description="Fork at this version of the log.")
    turn: int | None = Field(None, ge=0, description="Fork after the first N turns.")
    model: str | None = Field(None, max_length=500, description="The fork's model.")


class ModelUsageOut(BaseModel):
    calls: int
    tokens: dict[str, int]


class ConversationOut(BaseModel):
    conversation_id: str
    model: str
    version: int = Field(description="The version of its last event.")
    turns: int = Field(description="Turns in its history now.")
    turns_failed: int
    turns_rewound: int
    model_calls: int
    function_calls: int
    usage: dict[str, ModelUsageOut] = Field(description="Calls and tokens per model.")
    created_at: str
    updated_at: str
    parent: dict[str, Any] | None = Field(
        None, description="Where it was forked from: conversation_id, version, hash."
    )
    config: dict[str, Any] | None = Field(None, description="Its recorded config (wire form).")


class CardOut(BaseModel):
    conversation_id: str
    model: str
    title: str
    actors: list[str]
    created_at: str
    updated_at: str
    version: int
    parent_id: str | None = None
    parent_version: int | None = None
    turns: int | None = None


class CatalogOut(BaseModel):
    conversations: list[CardOut]
    page: int
    page_size: int
    has_more: bool
    total: int | None = Field(None, description="Matches, when counted (searches).")
    complete: bool = Field(description="False while the search index is still being built.")
    elapsed_ms: float


class HistoryOut(BaseModel):
    conversation_id: str
    view: str
    as_of: int | None
    version: int
    contents: list[dict[str, Any]]


class EventOut(BaseModel):
    conversation_id: str
    version: int
    position: int
    event_id: str
    type: str
    schema_version: int
    data: Any
    metadata: dict[str, Any]
    recorded_at: str
    hash: str


class EventsOut(BaseModel):
    events: list[EventOut]
    next: int = Field(description="Pass as after_version / after_position for the next page.")


class SendOut(BaseModel):
    conversation_id: str
    version: int
    turns: int
    text: str | None
    response: dict[str, Any] | None


class RewindOut(BaseModel):
    removed: list[dict[str, Any]] = Field(description="The user and model contents taken back.")
    conversation: ConversationOut


class ProblemOut(BaseModel):
    conversation_id: str
    version: int | None
    position: int | None
    event_id: str | None
    reason: str
    text: str


class VerifyOut(BaseModel):
    scope: str
    store: str
    ok: bool
    conversations_checked: int
    events_checked: int
    snapshots_checked: int
    problems: list[ProblemOut]
    checked_at: str
    seconds: float
    checkpoint: dict[str, Any] | None = Field(
        None,
        description="The newest signed checkpoint the log was checked against, and whether the "
        "log extends every checkpoint checked (None: the server runs without --checkpoint).",
    )


class TreeNodeOut(BaseModel):
    conversation_id: str
    depth: int
    parent_id: str | None
    parent_version: int | None
    model: str
    turns: int
    version: int
    updated_at: str
    divergence: str = Field(description="The first words of the first message it added.")


class TreeOut(BaseModel):
    root: str
    nodes: list[TreeNodeOut]


class DiffOut(BaseModel):
    a: str
    b: str
    common: int = Field(description="How many leading contents the two histories share.")
    a_rest: list[dict[str, Any]]
    b_rest: list[dict[str, Any]]


class TurnOut(BaseModel):
    turn: int
    actor: str
    started_at: str
    first_version: int
    last_version: int
    models: list[str]
    attempts: int
    latency_ms: float
    tokens: int | None
    function_calls: int
    failures: list[str]
    outcome: str
    text: str


class HealthOut(BaseModel):
    ok: bool
    version: str
    store: str
    read_only: bool
    authentication: str


# --------------------------------------------------------------------------- helpers


def require_conversation(state: ServeState, conversation_id: str) -> None:
    """404 unless the conversation exists (reads only its head)."""
    validate_conversation_id(conversation_id)
    if state.client.store.stream_info(conversation_id) is None:
        raise NotFoundError(
            f"no conversation {conversation_id!r} in this log; list them with GET /api/conversations"
        )


def get_chat(state: ServeState, conversation_id: str) -> Chat:
    """The conversation's chat, rebuilt from the log (404 if there is none)."""
    require_conversation(state, conversation_id)
    return state.client.chats.get(conversation_id)


def conversation_body(state: ServeState, chat: Chat) -> dict[str, Any]:
    info = state.client.store.stream_info(chat.id)
    usage = chat.usage
    config = chat.config
    return {
        "conversation_id": chat.id,
        "model": chat.model,
        "version": chat.version,
        "turns": usage.turns,
        "turns_failed": usage.turns_failed,
        "turns_rewound": usage.turns_rewound,
        "model_calls": usage.model_calls,
        "function_calls": usage.function_calls,
        "usage": {
            name: {"calls": model.calls, "tokens": dict(model.tokens)}
            for name, model in usage.by_model.items()
        },
        "created_at": info.created_at if info else usage.created_at,
        "updated_at": info.updated_at if info else usage.updated_at,
        "parent": msgspec.to_builtins(chat.parent) if chat.parent is not None else None,
        "config": config.to_wire() if config is not None else None,
    }


def history_contents(chat: Chat, view: str, as_of: int | None) -> list[dict[str, Any]]:
    if view == "context":
        contents = chat.get_context(as_of=as_of)
    else:
        contents = chat.get_history(curated=view == "curated", as_of=as_of)
    return [content.to_wire() for content in contents]


def _events_body(events: list[RecordedEvent], next_value: int) -> dict[str, Any]:
    return {"events": [event.to_export() for event in events], "next": next_value}


def wants_stream(request: Request, body: SendMessage) -> bool:
    return body.stream or "text/event-stream" in request.headers.get("accept", "")


async def first_event(
    follower: AsyncGenerator[tuple[int, str, dict[str, Any]] | None, None],
) -> tuple[int, str, dict[str, Any]]:
    """The first real event of a send (keep-alive ticks skipped)."""
    async for item in follower:
        if item is not None:
            return item
    raise RuntimeError("a send ended without an event")  # pragma: no cover - push() prevents it


def job_error_response(request: Request, job: SendJob, data: dict[str, Any]) -> Response:
    status = status_for(job.exception) if job.exception is not None else 500
    return error_response(request, status, data)


async def send_events(
    job: SendJob,
    follower: AsyncGenerator[tuple[int, str, dict[str, Any]] | None, None],
    first: tuple[int, str, dict[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    """A send's events as server-sent events: ``chunk`` ..., then ``done`` or ``error``."""
    if first is not None:
        yield sse(first[1], first[2], first[0])
        if first[1] in ("done", "error"):
            return
    async for item in follower:
        if item is None:
            yield b": keep-alive\n\n"
            continue
        index, kind, data = item
        yield sse(kind, data, index)


# --------------------------------------------------------------------------- routes


@router.get("/health", response_model=HealthOut, summary="Is the server up, and how is it set up")
def health(request: Request, actor: Reader) -> dict[str, Any]:
    """With tokens, only for their holders: it names the store."""
    state = state_of(request)
    return {
        "ok": True,
        "version": __version__,
        "store": state.client.store.location,
        "read_only": state.settings.read_only,
        "authentication": "bearer" if state.settings.tokens else "none (loopback only)",
    }


@router.get(
    "/conversations",
    response_model=CatalogOut,
    responses=ERRORS,
    summary="List or search conversations, newest first",
)
def list_conversations(
    request: Request,
    actor_: Reader,
    text: Annotated[str | None, Query(max_length=200, description="In the id or title.")] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Wrote to it.")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 25,
) -> JSONResponse:
    state = state_of(request)
    result = state.catalog.search(
        text=text, model=model, actor=actor, page=page, page_size=page_size
    )
    return JSONResponse(
        {
            "conversations": cards_of(result.items),
            "page": result.page,
            "page_size": result.page_size,
            "has_more": result.has_more,
            "total": result.total,
            "complete": result.complete,
            "elapsed_ms": round(result.elapsed_ms, 3),
        }
    )


@router.post(
    "/conversations",
    status_code=201,
    response_model=ConversationOut,
    responses=ERRORS,
    summary="Start a conversation",
)
def create_conversation(request: Request, body: CreateConversation, actor: Writer) -> JSONResponse:
    state = state_of(request)
    with acting_as(actor):
        chat = state.client.chats.create(
            model=body.model or state.settings.default_model,
            config=body.config,
            history=body.history,
        )
    return JSONResponse(conversation_body(state, chat), status_code=201)


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    responses=ERRORS,
    summary="One conversation: model, version, turns, usage, parent",
)
def get_conversation(request: Request, conversation_id: str, actor: Reader) -> JSONResponse:
    state = state_of(request)
    return JSONResponse(conversation_body(state, get_chat(state, conversation_id)))


@router.get(
    "/conversations/{conversation_id}/history",
    response_model=HistoryOut,
    responses=ERRORS,
    summary="The full, curated or context history, now or as of a version",
)
def get_history(
    request: Request,
    conversation_id: str,
    actor: Reader,
    view: Literal["full", "curated", "context"] = "full",
    as_of: Annotated[int | None, Query(ge=1, description="Time travel: this version.")] = None,
) -> JSONResponse:
    state = state_of(request)
    chat = get_chat(state, conversation_id)
    return JSONResponse(
        {
            "conversation_id": chat.id,
            "view": view,
            "as_of": as_of,
            "version": chat.version,
            "contents": history_contents(chat, view, as_of),
        }
    )


@router.get(
    "/conversations/{conversation_id}/turns",
    response_model=list[TurnOut],
    responses=ERRORS,
    summary="Each turn: actor, models, attempts, latency, tokens, failures",
)
def get_turns(request: Request, conversation_id: str, actor: Reader) -> JSONResponse:
    state = state_of(request)
    validate_conversation_id(conversation_id)
    events = state.client.store.read(conversation_id)
    if not events:
        raise NotFoundError(f"no conversation {conversation_id!r} in this log")
    return JSONResponse([vars(row) for row in turn_rows(events)])


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=SendOut,
    responses={**ERRORS, **SSE_RESPONSE},
    summary="Send a message; the reply whole, or streamed as server-sent events",
    description=(
        "With stream=true (or Accept: text/event-stream) the reply streams as server-sent "
        "events: 'chunk' ({text, chunk}) as they arrive, then 'done' ({conversation_id, "
        "version, turns, text, response}) or 'error' ({type, message}). An error before "
        "the first chunk is an ordinary JSON error response. The send is recorded whole "
        "even if the client goes away."
    ),
)
async def send_message(
    request: Request, conversation_id: str, body: SendMessage, actor: Writer
) -> Response:
    state = state_of(request)
    await run_in_threadpool(require_conversation, state, conversation_id)  # 404 first
    stream = wants_stream(request, body)
    job = state.sender.start(
        conversation_id, body.message, actor=actor, stream=stream, config=body.config
    )
    follower = job.follow()
    first = await first_event(follower)
    if not stream:
        while first[1] == "chunk":  # pragma: no cover - a whole send has no chunks
            first = await first_event(follower)
        await follower.aclose()
        if first[1] == "error":
            return job_error_response(request, job, first[2])
        return JSONResponse(first[2])
    if first[1] == "error":
        await follower.aclose()
        return job_error_response(request, job, first[2])
    return StreamingResponse(
        send_events(job, follower, first), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.get(
    "/conversations/{conversation_id}/events",
    response_model=EventsOut,
    responses=ERRORS,
    summary="A conversation's events after a version",
)
def conversation_events(
    request: Request,
    conversation_id: str,
    actor: Reader,
    after_version: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
) -> JSONResponse:
    state = state_of(request)
    validate_conversation_id(conversation_id)
    if state.client.store.stream_info(conversation_id) is None:
        raise NotFoundError(f"no conversation {conversation_id!r} in this log")
    events = state.client.store.read(
        conversation_id, after_version=after_version, to_version=after_version + limit
    )
    return JSONResponse(_events_body(events, events[-1].version if events else after_version))


@router.get(
    "/events",
    response_model=EventsOut,
    responses=ERRORS,
    summary="Every conversation's events after a store-wide position",
)
def store_events(
    request: Request,
    actor: Reader,
    after_position: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
) -> JSONResponse:
    state = state_of(request)
    events = state.client.store.read_all(after_position=after_position, limit=limit)
    return JSONResponse(_events_body(events, events[-1].position if events else after_position))


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id")
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPProblem(400, "InvalidInputError", "Last-Event-ID must be a number") from None
    if number < 0:
        raise HTTPProblem(400, "InvalidInputError", "Last-Event-ID must be >= 0")
    return number


def _follow_slot(state: ServeState) -> None:
    if not state.followers.acquire(blocking=False):
        raise HTTPProblem(
            503,
            "TooManyFollowers",
            f"{state.settings.max_followers} live followers are connected already; "
            "try again later, or read pages of GET /api/events",
        )


async def follow_events(
    state: ServeState,
    after_position: int,
    conversation_id: str | None = None,
    *,
    poll_interval: float = 0.2,
    keepalive: float = 15.0,
) -> AsyncIterator[bytes]:
    """Events after ``after_position`` (of one conversation, or all) as server-sent
    events, live: a thread follows ``store.subscribe_batches`` and hands batches over.
    The caller has taken a follower slot; it is given back when the client goes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[RecordedEvent] | BaseException | None] = asyncio.Queue(maxsize=4)
    stop = threading.Event()

    def hand_over(item: list[RecordedEvent] | BaseException | None) -> None:
        while not stop.is_set():
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the loop is gone: the server is stopping
                stop.set()
                return
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                future.cancel()  # the reader is slow: wait, unless it has gone

    def pump() -> None:
        try:
            batches = state.client.store.subscribe_batches(
                after_position, poll_interval=poll_interval, stop=stop, batch=200
            )
            with contextlib.closing(batches):
                for batch in batches:
                    if conversation_id is not None:
                        batch = [e for e in batch if e.conversation_id == conversation_id]
                    if batch:
                        hand_over(batch)
                    if stop.is_set():
                        break
        except BaseException as exc:
            hand_over(exc)
        finally:
            hand_over(None)

    thread = threading.Thread(target=pump, name="chatledger-follow", daemon=True)
    thread.start()
    try:
        yield b": following\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                yield sse("error", error_body(item))
                return
            for event in item:
                yield sse("event", event.to_export(), event.position)
    finally:
        stop.set()
        state.followers.release()


@router.get(
    "/events/stream",
    responses={**ERRORS, **SSE_RESPONSE},
    summary="Follow every new event live (server-sent events)",
    description=(
        "Each event is an SSE 'event' whose id is its store-wide position and whose data "
        "is the event envelope. Reconnecting with Last-Event-ID resumes after it."
    ),
)
async def stream_store_events(
    request: Request,
    actor: Reader,
    after_position: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    state = state_of(request)
    start = _last_event_id(request)
    _follow_slot(state)
    return StreamingResponse(
        follow_events(state, after_position if start is None else start),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.get(
    "/conversations/{conversation_id}/events/stream",
    responses={**ERRORS, **SSE_RESPONSE},
    summary="Follow one conversation's new events live (server-sent events)",
    description="Events after after_version, then new ones as they are appended; the SSE "
    "id is the store-wide position (Last-Event-ID resumes after it).",
)
async def stream_conversation_events(
    request: Request,
    conversation_id: str,
    actor: Reader,
    after_version: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    state = state_of(request)
    validate_conversation_id(conversation_id)
    store = state.client.store
    start = _last_event_id(request)
    if start is None:
        info = await run_in_threadpool(store.stream_info, conversation_id)
        if info is None:
            raise NotFoundError(f"no conversation {conversation_id!r} in this log")
        # Start just before the first event wanted: the position of version after_version
        # (or of version 1's predecessor, 0, for the whole conversation).
        if after_version == 0:
            start = 0
        else:
            anchor = await run_in_threadpool(
                lambda: store.read(
                    conversation_id, after_version=after_version - 1, to_version=after_version
                )
            )
            start = anchor[0].position if anchor else 0
    _follow_slot(state)
    return StreamingResponse(
        follow_events(state, start, conversation_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.post(
    "/conversations/{conversation_id}/fork",
    status_code=201,
    response_model=ConversationOut,
    responses=ERRORS,
    summary="Fork a conversation at a version or after a turn",
)
def fork_conversation(
    request: Request, conversation_id: str, actor: Writer, body: ForkRequest | None = None
) -> JSONResponse:
    state = state_of(request)
    body = body or ForkRequest()
    with acting_as(actor):
        chat = get_chat(state, conversation_id)
        fork = chat.fork(at=body.at, turn=body.turn, model=body.model)
    return JSONResponse(conversation_body(state, fork), status_code=201)


@router.post(
    "/conversations/{conversation_id}/rewind",
    response_model=RewindOut,
    responses=ERRORS,
    summary="Take back the last turn (recorded as an event; nothing is deleted)",
)
def rewind_conversation(request: Request, conversation_id: str, actor: Writer) -> JSONResponse:
    state = state_of(request)
    with acting_as(actor):
        chat = get_chat(state, conversation_id)
        user, model = chat.rewind()
    return JSONResponse(
        {
            "removed": [user.to_wire(), model.to_wire()],
            "conversation": conversation_body(state, chat),
        }
    )


@router.get(
    "/conversations/{conversation_id}/verify",
    response_model=VerifyOut,
    responses=ERRORS,
    summary="Verify one conversation's hash chain, versions, parent and snapshot",
)
def verify_conversation(request: Request, conversation_id: str, actor: Reader) -> JSONResponse:
    state = state_of(request)
    chat = get_chat(state, conversation_id)
    started = time.perf_counter()
    report = chat.verify()
    return JSONResponse(
        report_body(
            report,
            scope=chat.id,
            seconds=time.perf_counter() - started,
            location=state.client.store.location,
        )
    )


@router.get(
    "/verify",
    response_model=VerifyOut,
    responses=ERRORS,
    summary="Verify the whole store (reads every event)",
)
def verify_everything(request: Request, actor: Reader) -> JSONResponse:
    return JSONResponse(state_of(request).audit.run_now())


def export_response(state: ServeState, conversation_id: str, forks: bool) -> StreamingResponse:
    """A conversation's export as a JSON-lines download (what ``chatledger export``
    writes, verifiable with ``examples/verify_export.py``)."""
    validate_conversation_id(conversation_id)
    if state.client.store.stream_info(conversation_id) is None:
        raise NotFoundError(f"no conversation {conversation_id!r} in this log")
    lines = export_conversation(state.client.store, conversation_id, include_forks=forks)
    # The first line comes after the walk up the fork's parents: a damaged chain is an
    # error response here, not a download broken off once the response has started.
    first = list(itertools.islice(lines, 1))
    safe = "".join(c for c in conversation_id[:36] if c.isalnum() or c in "-_") or "conversation"
    return StreamingResponse(
        (line + "\n" for line in itertools.chain(first, lines)),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="chatledger-{safe}.jsonl"'},
    )


@router.get(
    "/conversations/{conversation_id}/export",
    responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}},
    summary="Export as verifiable JSON lines (with its ancestors; forks=true adds its forks)",
)
def export(
    request: Request, conversation_id: str, actor: Reader, forks: bool = False
) -> StreamingResponse:
    return export_response(state_of(request), conversation_id, forks)


@router.get(
    "/conversations/{conversation_id}/tree",
    response_model=TreeOut,
    responses=ERRORS,
    summary="The tree of forks the conversation belongs to, from its root",
)
def tree(request: Request, conversation_id: str, actor: Reader) -> JSONResponse:
    state = state_of(request)
    validate_conversation_id(conversation_id)
    root = state.client.chats.tree(conversation_id)
    nodes = []
    for depth, node in root.walk():
        summary = node.summary
        nodes.append(
            {
                "conversation_id": summary.conversation_id,
                "depth": depth,
                "parent_id": summary.parent_id,
                "parent_version": summary.parent_version,
                "model": summary.model,
                "turns": summary.turns,
                "version": summary.version,
                "updated_at": summary.updated_at,
                "divergence": node.divergence,
            }
        )
    return JSONResponse({"root": root.conversation_id, "nodes": nodes})


@router.get(
    "/diff",
    response_model=DiffOut,
    responses=ERRORS,
    summary="Two conversations (say, two branches) from where their histories part",
)
def diff(
    request: Request,
    actor: Reader,
    a: Annotated[str, Query(max_length=200)],
    b: Annotated[str, Query(max_length=200)],
) -> JSONResponse:
    state = state_of(request)
    left = [c.to_wire() for c in get_chat(state, a).get_history()]
    right = [c.to_wire() for c in get_chat(state, b).get_history()]
    common = common_prefix(left, right)
    return JSONResponse(
        {"a": a, "b": b, "common": common, "a_rest": left[common:], "b_rest": right[common:]}
    )
