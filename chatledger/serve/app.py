"""The ASGI application: :func:`create_app` builds it from a client and settings.

Layout: ``/api/...`` is the JSON API (bearer tokens, never cookies; schema at
``/openapi.json``); every other path is a page (a session cookie and a CSRF token in
every form); ``/static/...`` holds the stylesheet and the one script.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..client import Client
from ..errors import (
    APIError,
    ChatledgerError,
    ChatStateError,
    ConcurrencyError,
    FunctionCallingError,
    IntegrityError,
    InvalidInputError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    NotFoundError,
    ReplayMismatchError,
    StoreUnavailableError,
)
from .audit import StoreAudit
from .catalog import Catalog, StoreCatalog
from .middleware import (
    BodyLimitMiddleware,
    HostCheckMiddleware,
    SecurityHeadersMiddleware,
    SessionMiddleware,
)
from .sends import Sender, SendsBusyError, error_body
from .sessions import Session, Sessions
from .settings import ServeSettings

__all__ = ["HTTPProblem", "ServeState", "create_app", "state_of"]

logger = logging.getLogger("chatledger.serve")

HERE = Path(__file__).parent


class HTTPProblem(Exception):
    """An error the server itself reports (authentication, CSRF, read-only, limits)."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers


class LoginRequired(HTTPProblem):
    """A page needs a signed-in session: pages redirect to the sign-in form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(401, "Unauthorized", "sign in with your access token first")
        self.next_path = next_path


def status_for(exc: BaseException) -> int:
    """The HTTP status that says what kind of library error happened (500 for anything
    that is not a chatledger error: a bug)."""
    if isinstance(exc, InvalidInputError | FunctionCallingError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ChatStateError | ConcurrencyError | ReplayMismatchError):
        return 409
    if isinstance(exc, ModelTimeoutError):
        return 504
    if isinstance(exc, APIError | ModelConnectionError | InvalidResponseError):
        return 502
    if isinstance(exc, StoreUnavailableError | SendsBusyError):
        return 503
    if isinstance(exc, IntegrityError):
        return 500
    return 500


@dataclass
class ServeState:
    """Everything the routes share."""

    client: Client
    settings: ServeSettings
    catalog: Catalog
    sender: Sender
    sessions: Sessions
    templates: jinja2.Environment
    audit: StoreAudit
    #: The actor recorded when no tokens are configured.
    actor: str
    followers: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.followers = threading.BoundedSemaphore(self.settings.max_followers)


def state_of(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    return state


def wants_json(request: Request) -> bool:
    """Whether to answer an error as JSON (the API, and a page's own fetch calls)."""
    if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def page_context(request: Request) -> dict[str, Any]:
    """What every page template is given."""
    state = state_of(request)
    return {
        "settings": state.settings,
        "session": getattr(request.state, "session", None),
        "tokens": bool(state.settings.tokens),
        "read_only": state.settings.read_only,
        "path": request.url.path,
    }


def error_response(request: Request, status: int, body: dict[str, Any]) -> Response:
    """An error as JSON for the API, as a page for a browser."""
    if wants_json(request):
        return JSONResponse({"error": body}, status_code=status)
    state = state_of(request)
    html = state.templates.get_template("error.html").render(
        **page_context(request), status=status, error=body
    )
    return HTMLResponse(html, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one sentence, without echoing the input."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem) -> Response:
        if isinstance(exc, LoginRequired) and not wants_json(request):
            return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)
        response = error_response(
            request, exc.status, {"type": exc.error_type, "message": exc.message}
        )
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(ChatledgerError)
    async def _library(request: Request, exc: ChatledgerError) -> Response:
        status = status_for(exc)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(request, status, error_body(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(
            request, 400, {"type": "InvalidInputError", "message": _validation_message(exc)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kinds = {
            404: "NotFound",
            405: "MethodNotAllowed",
            413: "RequestTooLarge",
            400: "InvalidInputError",
        }
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"there is no page or endpoint at {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(
            request,
            exc.status_code,
            {"type": kinds.get(exc.status_code, "HTTPError"), "message": message},
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        logger.error(
            "%s %s failed", request.method, request.url.path, exc_info=(type(exc), exc, None)
        )
        return error_response(request, 500, error_body(exc))


# --------------------------------------------------------------------------- identity


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(
            401,
            "Unauthorized",
            "the Authorization header must be 'Bearer TOKEN'",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def api_actor(request: Request) -> str:
    """Who an API request acts as: the owner of its bearer token (when the server has
    tokens), else the server's actor. Cookies are never looked at."""
    state = state_of(request)
    if not state.settings.tokens:
        return state.actor
    token = _bearer(request)
    if token is None:
        raise HTTPProblem(
            401,
            "Unauthorized",
            "this server needs an access token: send 'Authorization: Bearer TOKEN'",
            {"WWW-Authenticate": "Bearer"},
        )
    actor = state.settings.tokens.identify(token)
    if actor is None:
        logger.warning("refused an API request with an unknown access token")
        raise HTTPProblem(
            401, "Unauthorized", "that access token is not valid", {"WWW-Authenticate": "Bearer"}
        )
    return actor


def check_same_origin(request: Request) -> None:
    """Refuse a request a page on another site made the browser send (CSRF): by the
    Fetch Metadata header where the browser sends it, and by Origin where present."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPProblem(
            403,
            "CrossSiteRequest",
            "refused a request sent from another site; use this server's own pages",
        )
    origin = request.headers.get("origin")
    if origin is not None:
        # The host and port must be this server's; the scheme may differ behind a
        # TLS-terminating proxy (the browser says https, the server sees http).
        host = request.headers.get("host", "").lower()
        parsed = urlsplit(origin.lower())
        if origin == "null" or parsed.scheme not in ("http", "https") or parsed.netloc != host:
            raise HTTPProblem(
                403,
                "CrossSiteRequest",
                "refused a request whose Origin is another site; use this server's own pages",
            )


def check_writable(request: Request) -> None:
    if state_of(request).settings.read_only:
        raise HTTPProblem(
            403,
            "ReadOnly",
            "this server is read-only (started with --read-only): nothing can be written",
        )


def api_writer(request: Request) -> str:
    """An API request that writes: refused in read-only mode. Without tokens (loopback
    only), a browser must not be able to send it from another site: it must be JSON
    (which a cross-site form cannot send without the server's consent) and not
    cross-site by its Fetch Metadata and Origin headers."""
    check_writable(request)
    actor = api_actor(request)
    if not state_of(request).settings.tokens:
        check_same_origin(request)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise HTTPProblem(
                415,
                "UnsupportedMediaType",
                "send API writes as JSON, with 'Content-Type: application/json' "
                "(even when the body is empty)",
            )
    return actor


def page_session(request: Request) -> Session:
    """The session of a page request; with tokens, it must be signed in."""
    state = state_of(request)
    session: Session = request.state.session
    if state.settings.tokens and session.actor is None:
        path = request.url.path
        raise LoginRequired(path if path.startswith("/") and not path.startswith("//") else "/")
    if session.actor is None:
        session.actor = state.actor
    return session


async def page_writer(request: Request) -> Session:
    """A page form that writes: signed in, writable, same-site, with the session's CSRF
    token in its ``csrf`` field."""
    session = page_session(request)
    check_writable(request)
    await check_form(request, session)
    return session


async def check_form(request: Request, session: Session) -> None:
    check_same_origin(request)
    form = await request.form()
    if not session.check_csrf(form.get("csrf")):
        raise HTTPProblem(
            403,
            "CSRFTokenInvalid",
            "this form has expired or did not come from this server's pages; reload the "
            "page and send it again",
        )


# --------------------------------------------------------------------------- the app


def conversation_url(conversation_id: str, page: str = "") -> str:
    """The page of a conversation (its id quoted whole: ids may hold any printable text)."""
    return f"/c/{quote(str(conversation_id), safe='')}{page}"


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["curl"] = conversation_url
    return environment


def create_app(
    client: Client,
    settings: ServeSettings | None = None,
    *,
    catalog: Catalog | None = None,
) -> FastAPI:
    """The server's ASGI app over ``client`` (its store and models).

    ``client.actor`` is the actor recorded without tokens unless ``settings.actor`` is
    given. The app starts the catalog's index on startup and, on shutdown, waits for
    running sends to be recorded. It does not close ``client``.
    """
    from .api import router as api_router
    from .pages import router as page_router

    settings = settings or ServeSettings()
    actor = settings.actor or client.actor
    sessions = Sessions()
    state = ServeState(
        client=client,
        settings=settings,
        catalog=catalog or StoreCatalog(client.store),
        sender=Sender(client, max_running=settings.max_sends),
        sessions=sessions,
        templates=_templates(),
        audit=StoreAudit(client.store),
        actor=actor,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.catalog.start()
        try:
            yield
        finally:
            state.sender.close()
            state.catalog.close()

    app = FastAPI(
        title="chatledger",
        version=__version__,
        description=(
            "Conversations with Gemini (or an offline model) kept in an append-only, "
            "hash-chained event log. Authenticate with 'Authorization: Bearer TOKEN' when "
            'the server has tokens. Errors are JSON: {"error": {"type", "message"}}.'
        ),
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not here
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.serve = state
    _install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # Outermost last: the Host check sees every request first.
    app.add_middleware(SessionMiddleware, sessions=sessions, default_actor=None)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(HostCheckMiddleware, allowed=settings.host_names())
    return app
