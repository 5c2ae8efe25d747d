"""The server's edge, as plain ASGI middleware (so that streamed responses pass through
untouched): the Host check, the body limit, security headers, and browser sessions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .sessions import Sessions

__all__ = [
    "BodyLimitMiddleware",
    "HostCheckMiddleware",
    "SecurityHeadersMiddleware",
    "SessionMiddleware",
    "cookie_name",
]

#: Only the server's own files may run or style a page; nothing may frame it, and no
#: page may send a form or a request anywhere else. Model output cannot load images
#: from other hosts (which could carry data out in their URLs).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


async def _send_json(send: Send, status: int, error_type: str, message: str) -> None:
    body = json.dumps({"error": {"type": error_type, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _host_name(host_header: str) -> str | None:
    """The name part of a Host header (``[::1]`` keeps its brackets), or None."""
    host = host_header.strip().lower()
    if not host or any(c.isspace() or c in "/\\@?#" for c in host):
        return None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(":")
        rest = f":{port}" if port else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name


class HostCheckMiddleware:
    """Answer only requests whose Host header names this server.

    A web page can point a name it controls at 127.0.0.1 (DNS rebinding) and then read
    what a loopback server answers; checking the Host header stops that. ``"*"`` in
    ``allowed`` accepts any name (for a server behind tokens on every address)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {name.lower() for name in allowed}
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        host = ""
        for key, value in scope.get("headers") or []:
            if key == b"host":
                host = value.decode("latin-1")
                break
        name = _host_name(host)
        if name is None or name not in self.allowed:
            await _send_json(
                send,
                400,
                "InvalidHost",
                "this server does not answer to that host name; use "
                + " or ".join(sorted(self.allowed))
                + " (or start it with --allowed-host)",
            )
            return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """A request body over the limit (an HTTPException, so FastAPI passes it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is larger than this server accepts ({limit} bytes)"
        )


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes: at once from Content-Length, and while
    reading a body sent without one (chunked)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers") or []:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > self.limit:
                    await _send_json(
                        send,
                        413 if length > self.limit else 400,
                        "RequestTooLarge" if length > self.limit else "InvalidInputError",
                        str(BodyTooLarge(self.limit).detail)
                        if length > self.limit
                        else "the Content-Length header is not a number",
                    )
                    return
        received = 0
        limit = self.limit

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeadersMiddleware:
    """Add the Content-Security-Policy and friends to every response, and ``no-store``
    to every response that is not a static file (the log is not for shared caches)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {key.lower() for key, _ in headers}
                headers.extend(item for item in _SECURITY_HEADERS if item[0] not in present)
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cookie_name(scope: Scope) -> str:
    """The session cookie's name: cookies do not keep ports apart, so two servers on
    one host (8000 and 8001) each get their own."""
    server = scope.get("server")
    port = server[1] if isinstance(server, (tuple, list)) and len(server) > 1 else ""
    return f"chatledger_session_{port}" if port else "chatledger_session"


class SessionMiddleware:
    """Give every page request a session (``request.state.session``), in a cookie that
    holds only its random id (HttpOnly, SameSite=Strict). An endpoint that signs someone
    in or out replaces ``request.state.session``; the new id is then sent. The API and
    static files never see sessions."""

    def __init__(self, app: ASGIApp, sessions: Sessions, default_actor: str | None) -> None:
        self.app = app
        self.sessions = sessions
        self.default_actor = default_actor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(("/api/", "/static/", "/openapi.json")):
            await self.app(scope, receive, send)
            return
        name = cookie_name(scope)
        presented: str | None = None
        for key, value in scope.get("headers") or []:
            if key == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:  # a malformed Cookie header: as if there were none
                    continue
                if name in cookie:
                    presented = cookie[name].value
        session = self.sessions.get(presented)
        if session is None:
            session = self.sessions.new(self.default_actor)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                current = state.get("session")
                if current is not None and current.id != presented:
                    headers = list(message.get("headers") or [])
                    headers.append(
                        (
                            b"set-cookie",
                            f"{name}={current.id}; Path=/; HttpOnly; SameSite=Strict".encode(),
                        )
                    )
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
