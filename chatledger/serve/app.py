"""The ASGI application: :func:`create_app` builds it from a client and settings.

Layout: ``/api/...`` is the JSON API (bearer tokens, never cookies; schema at
``/openapi.json``); every other path is a page (a session cookie and a CSRF token in
every form); ``/static/...`` holds the stylesheet and the one script.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..client import Client
from ..errors import (
    ChatledgerError,
)
from .api import router as api_router
from .audit import StoreAudit
from .catalog import Catalog, StoreCatalog
from .context import (
    HERE,
    HTTPProblem,
    LoginRequired,
    ServeState,
    conversation_url,
    error_response,
    state_of,
    status_for,
    validation_message,
    wants_json,
)
from .middleware import (
    BodyLimitMiddleware,
    HostCheckMiddleware,
    SecurityHeadersMiddleware,
    SessionMiddleware,
)
from .pages import router as page_router
from .sends import Sender, error_body
from .sessions import Sessions
from .settings import ServeSettings

__all__ = ["HTTPProblem", "ServeState", "create_app", "state_of"]

logger = logging.getLogger("chatledger.serve")


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
            request, 400, {"type": "InvalidInputError", "message": validation_message(exc)}
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
        audit=StoreAudit(client.store, settings.checkpoints),
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
