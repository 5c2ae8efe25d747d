"""The viewer: server-rendered pages over the same log as the API.

Pages read with the session's identity and write only through forms that carry the
session's CSRF token (and pass the same-origin checks). The chat page streams a reply
with ``EventSource`` from ``/c/{id}/sends/{send}``; without JavaScript its form still
works (the reply shows once recorded).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.responses import StreamingResponse as _StreamingResponse

from ..client import Chat, acting_as
from ..errors import InvalidInputError, NotFoundError
from ..events.envelope import validate_conversation_id
from .api import (
    SSE_HEADERS,
    export_response,
    get_chat,
    history_contents,
    require_conversation,
    sse,
)
from .audit import report_body
from .context import (
    HTTPProblem,
    ServeState,
    check_form,
    conversation_url,
    page_context,
    page_session,
    page_writer,
    state_of,
)
from .render import content_views, pretty_json, render_markdown
from .sessions import Session
from .views import EVENT_TYPES, common_prefix, draw_tree, summarize_event, turn_rows

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Viewer = Annotated[Session, Depends(page_session)]
Editor = Annotated[Session, Depends(page_writer)]

MAX_MESSAGE = 100_000
TIMELINE_PAGE = 200


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = (
        state_of(request)
        .templates.get_template(template)
        .render(**page_context(request), **context)
    )
    return HTMLResponse(html, status_code=status)


def _form_text(form: Any, name: str, *, limit: int = 500, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInputError(f"the form needs a {name}")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text")
    if len(value) > limit:
        raise InvalidInputError(f"{name} is longer than {limit} characters")
    return value


def _form_int(form: Any, name: str) -> int | None:
    value = _form_text(form, name, limit=20)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number") from None
    if number < 0:
        raise InvalidInputError(f"{name} must be 0 or more")
    return number


# --------------------------------------------------------------------------- sign in


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    state = state_of(request)
    if not state.settings.tokens:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", next=_safe_next(next), failed=False)


def _safe_next(target: str) -> str:
    """Only a path on this server (never ``//host`` or a URL)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


@router.post("/login")
async def login(request: Request) -> Response:
    state = state_of(request)
    session: Session = request.state.session
    if not state.settings.tokens:
        return RedirectResponse("/", status_code=303)
    await check_form(request, session)
    form = await request.form()
    token = form.get("token")
    target = _safe_next(str(form.get("next") or "/"))
    actor = state.settings.tokens.identify(token) if isinstance(token, str) else None
    if actor is None:
        return render(request, "login.html", status=401, next=target, failed=True)
    request.state.session = state.sessions.sign_in(session, actor)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    state = state_of(request)
    session: Session = request.state.session
    await check_form(request, session)
    state.sessions.drop(session.id)
    request.state.session = state.sessions.new(None)
    return RedirectResponse("/login" if state.settings.tokens else "/", status_code=303)


# --------------------------------------------------------------------------- listing


@router.get("/")
def index(
    request: Request,
    session: Viewer,
    q: Annotated[str | None, Query(max_length=200)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    state = state_of(request)
    result = state.catalog.search(
        text=q, model=model, actor=actor, page=page, page_size=state.settings.page_size
    )
    query = {key: value for key, value in (("q", q), ("model", model), ("actor", actor)) if value}

    def page_url(number: int) -> str:
        return "/?" + urlencode({**query, "page": number})

    catalog: Any = state.catalog
    models, actors = catalog.suggestions() if hasattr(catalog, "suggestions") else ([], [])
    return render(
        request,
        "index.html",
        result=result,
        q=q or "",
        model=model or "",
        actor=actor or "",
        filtered=bool(query),
        prev_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if result.has_more else None,
        models=models,
        actors=actors,
    )


@router.post("/new")
async def new_conversation(request: Request, session: Editor) -> Response:
    state = state_of(request)
    form = await request.form()
    model = _form_text(form, "model") or state.settings.default_model
    system = _form_text(form, "system", limit=MAX_MESSAGE)
    config = {"system_instruction": system} if system else None
    assert session.actor is not None

    def create() -> Chat:
        with acting_as(session.actor or state.actor):
            return state.client.chats.create(model=model, config=config)

    chat = await run_in_threadpool(create)
    return RedirectResponse(conversation_url(chat.id, "/chat"), status_code=303)


# --------------------------------------------------------------------------- a conversation


def _conversation_context(state: ServeState, chat: Chat) -> dict[str, Any]:
    info = state.client.store.stream_info(chat.id)
    return {
        "chat": chat,
        "cid": chat.id,
        "url": conversation_url(chat.id),
        "info": info,
        "usage": chat.usage,
        "parent": chat.parent,
        "parent_url": conversation_url(chat.parent.conversation_id) if chat.parent else None,
    }


@router.get("/c/{conversation_id}")
def conversation(
    request: Request,
    conversation_id: str,
    session: Viewer,
    view: Literal["curated", "full", "context"] = "curated",
    as_of: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    state = state_of(request)
    chat = get_chat(state, conversation_id)
    if as_of is not None and as_of >= chat.version:
        as_of = None
    contents = history_contents(chat, view, as_of)
    events = state.client.store.read(chat.id)
    return render(
        request,
        "conversation.html",
        **_conversation_context(state, chat),
        view=view,
        as_of=as_of,
        contents=content_views(contents),
        turns=turn_rows(events),
        branches=chat.branches(),
        version=chat.version,
    )


@router.get("/c/{conversation_id}/events")
def timeline(
    request: Request,
    conversation_id: str,
    session: Viewer,
    type: Annotated[list[str] | None, Query(max_length=20)] = None,
    turn: Annotated[str | None, Query(max_length=12, description="A turn number.")] = None,
    after_version: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The events of a conversation; ``turn`` may be empty (the form's blank field)."""
    state = state_of(request)
    turn_number = _form_int({"turn": turn}, "turn")
    validate_conversation_id(conversation_id)
    store = state.client.store
    info = store.stream_info(conversation_id)
    if info is None:
        raise NotFoundError(f"no conversation {conversation_id!r} in this log")
    chosen = [name for name in (type or []) if name in EVENT_TYPES]
    shown: list[dict[str, Any]] = []
    position = after_version
    # Read in slices until a page of matching events is full (a filter may skip many).
    while len(shown) < TIMELINE_PAGE and position < info.version:
        events = store.read(conversation_id, after_version=position, to_version=position + 500)
        if not events:
            break
        for event in events:
            position = event.version
            if chosen and event.type not in chosen:
                continue
            if turn_number is not None and getattr(event.data, "turn", None) != turn_number:
                continue
            shown.append(
                {
                    "event": event,
                    "summary": summarize_event(event),
                    "json": pretty_json(event.to_export()),
                }
            )
            if len(shown) >= TIMELINE_PAGE:
                break
    query: list[tuple[str, str | int]] = [("type", name) for name in chosen]
    if turn_number is not None:
        query.append(("turn", turn_number))
    more = position < info.version
    return render(
        request,
        "events.html",
        cid=conversation_id,
        url=conversation_url(conversation_id),
        info=info,
        rows=shown,
        types=EVENT_TYPES,
        chosen=chosen,
        turn=turn_number,
        next_url=(
            conversation_url(conversation_id, "/events?")
            + urlencode([*query, ("after_version", position)])
            if more
            else None
        ),
    )


@router.get("/c/{conversation_id}/tree")
def tree_page(request: Request, conversation_id: str, session: Viewer) -> Response:
    state = state_of(request)
    validate_conversation_id(conversation_id)
    root = state.client.chats.tree(conversation_id)
    drawing = draw_tree(root, conversation_id)
    nodes = [node for _, node in root.walk()]
    return render(
        request,
        "tree.html",
        cid=conversation_id,
        url=conversation_url(conversation_id),
        drawing=drawing,
        nodes=nodes,
        other=next((n.conversation_id for n in nodes if n.conversation_id != conversation_id), ""),
    )


@router.get("/diff")
def diff_page(
    request: Request,
    session: Viewer,
    a: Annotated[str, Query(max_length=200)],
    b: Annotated[str, Query(max_length=200)],
) -> Response:
    state = state_of(request)
    left_chat, right_chat = get_chat(state, a), get_chat(state, b)
    left = [c.to_wire() for c in left_chat.get_history()]
    right = [c.to_wire() for c in right_chat.get_history()]
    common = common_prefix(left, right)
    left_views = content_views(left)
    right_views = content_views(right)
    rows = []
    for index in range(common, max(len(left), len(right))):
        rows.append(
            (
                left_views[index] if index < len(left) else None,
                right_views[index] if index < len(right) else None,
            )
        )
    return render(
        request,
        "diff.html",
        a=left_chat,
        b=right_chat,
        a_url=conversation_url(a),
        b_url=conversation_url(b),
        common=common,
        shared=left_views[:common],
        rows=rows,
        identical=common == len(left) == len(right),
    )


@router.get("/c/{conversation_id}/audit")
def audit_page(request: Request, conversation_id: str, session: Viewer) -> Response:
    state = state_of(request)
    chat = get_chat(state, conversation_id)
    started = time.perf_counter()
    report = chat.verify()
    body = report_body(
        report,
        scope=chat.id,
        seconds=time.perf_counter() - started,
        location=state.client.store.location,
    )
    events = state.client.store.read(chat.id, after_version=max(chat.version - 1, 0))
    return render(
        request,
        "audit.html",
        **_conversation_context(state, chat),
        report=body,
        head=events[-1] if events else None,
    )


@router.get("/c/{conversation_id}/export")
def export_page(
    request: Request, conversation_id: str, session: Viewer, forks: bool = False
) -> Response:
    return export_response(state_of(request), conversation_id, forks)


@router.get("/audit")
def store_audit_page(request: Request, session: Viewer, run: bool = False) -> Response:
    state = state_of(request)
    if run:
        state.audit.start()
        return RedirectResponse("/audit", status_code=303)
    return render(
        request,
        "store_audit.html",
        audit=state.audit,
        report=state.audit.last,
        location=state.client.store.location,
    )


# --------------------------------------------------------------------------- chatting


@router.get("/c/{conversation_id}/chat")
def chat_page(request: Request, conversation_id: str, session: Viewer) -> Response:
    state = state_of(request)
    chat = get_chat(state, conversation_id)
    return render(
        request,
        "chat.html",
        **_conversation_context(state, chat),
        contents=content_views(history_contents(chat, "curated", None)),
        version=chat.version,
    )


@router.post("/c/{conversation_id}/send")
async def send_page(request: Request, conversation_id: str, session: Editor) -> Response:
    state = state_of(request)
    form = await request.form()
    message = _form_text(form, "message", limit=MAX_MESSAGE, required=True)
    await run_in_threadpool(require_conversation, state, conversation_id)
    job = state.sender.start(
        conversation_id, message, actor=session.actor or state.actor, stream=True
    )
    stream_url = conversation_url(conversation_id, f"/sends/{job.id}")
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"send_id": job.id, "stream_url": stream_url}, status_code=202)
    await run_in_threadpool(job.wait, 600)
    return RedirectResponse(conversation_url(conversation_id, "/chat"), status_code=303)


@router.get("/c/{conversation_id}/sends/{send_id}")
async def send_stream(
    request: Request, conversation_id: str, send_id: str, session: Viewer
) -> Response:
    """A send's chunks for the chat page's EventSource; ``done`` carries the reply
    rendered (sanitized) for the page."""
    state = state_of(request)
    job = state.sender.get(send_id)
    if job is None or job.conversation_id != conversation_id:
        raise HTTPProblem(404, "NotFound", "no such send (it ended more than 5 minutes ago?)")
    if state.settings.tokens and job.actor != session.actor:
        raise HTTPProblem(403, "Forbidden", "this send was started by someone else")
    last = request.headers.get("last-event-id")
    start = int(last) + 1 if last is not None and last.isdigit() else 0

    async def events() -> AsyncIterator[bytes]:
        async for item in job.follow(start):
            if item is None:
                yield b": keep-alive\n\n"
                continue
            index, kind, data = item
            if kind == "done":
                data = {**data, "html": str(render_markdown(data.get("text") or ""))}
            yield sse(kind, data, index)

    return _StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/c/{conversation_id}/fork")
async def fork_page(request: Request, conversation_id: str, session: Editor) -> Response:
    state = state_of(request)
    form = await request.form()
    at = _form_int(form, "at")
    turn = _form_int(form, "turn")
    model = _form_text(form, "model")

    def fork() -> Chat:
        with acting_as(session.actor or state.actor):
            return get_chat(state, conversation_id).fork(at=at, turn=turn, model=model)

    child = await run_in_threadpool(fork)
    return RedirectResponse(conversation_url(child.id, "/chat"), status_code=303)


@router.post("/c/{conversation_id}/rewind")
async def rewind_page(request: Request, conversation_id: str, session: Editor) -> Response:
    state = state_of(request)

    def rewind() -> None:
        with acting_as(session.actor or state.actor):
            get_chat(state, conversation_id).rewind()

    await run_in_threadpool(rewind)
    return RedirectResponse(conversation_url(conversation_id, "/chat"), status_code=303)
