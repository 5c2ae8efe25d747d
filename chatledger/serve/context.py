"""What every request handler shares: the server's state, its errors, and the checks a
request passes (credentials, same origin, writable, the page session). The API
(:mod:`.api`) and the pages (:mod:`.pages`) import it; :mod:`.app` assembles them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..client import Client
from ..errors import (
    APIError,
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
from .catalog import Catalog
from .sends import Sender, SendsBusyError
from .sessions import Session, Sessions
from .settings import ServeSettings

__all__ = [
    "HTTPProblem",
    "ServeState",
    "api_actor",
    "api_writer",
    "check_form",
    "conversation_url",
    "error_response",
    "page_context",
    "page_session",
    "page_writer",
    "state_of",
    "status_for",
]

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


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one sentence, without echoing the input."""
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


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
