"""The httpx clients the HTTP transports use, with httpcore's connection pool fixed.

httpcore 1.0.x's pool (``_assign_requests_to_connections``, run on every request and
every response close) counts *all* connections as idle when it enforces
``max_keepalive_connections``: once more connections exist than that limit, every
connection that falls idle is closed at once, so a busy async client opens a new TCP
(and TLS) connection for nearly every request (httpcore pull request #1000). It also
rebuilds its lists of connections for every queued request, and asks every connection
whether it expired (a ``poll()`` and a ``getpeername()`` each) on every pass.

:class:`_FixedAsyncPool` and :class:`_FixedSyncPool` replace that one method: idle
connections are counted as idle, a connection assigned to a request that has not sent
yet is never closed or assigned twice, idle connections are asked whether they
expired at most every :data:`SWEEP_S` seconds and always before they are reused, and one
pass is O(connections + requests). Everything else is httpcore's.
See docs/performance.md (figure 7) for what it changed.
"""

from __future__ import annotations

import time
from typing import Any

import httpcore
import httpx

__all__ = ["LIMITS", "async_client", "sync_client"]

#: As httpx's defaults (100 connections), but every connection may be kept alive, as
#: aiohttp's and google-genai's pools do: a backend with many concurrent chats reuses
#: them instead of reconnecting (idle ones still close after ``keepalive_expiry``).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0)


#: How often, at most, every idle connection is asked whether it expired (its keep-alive
#: ran out, or the server closed it: a ``poll()`` and a ``getpeername()`` system call
#: each). An idle connection is always asked before a request is given to it.
SWEEP_S = 1.0


def _assign(pool: Any) -> list[Any]:
    """httpcore's ``_assign_requests_to_connections``, with the keep-alive count right
    and in one pass: the connections to close (their I/O is done by the caller).

    Every idle connection is asked whether it expired at most every :data:`SWEEP_S`
    seconds (so an idle connection may outlive its keep-alive by that much), and always
    right before a request is given to it: httpcore asks every connection on every pass,
    which at 100 connections was most of this method's time."""
    closing: list[Any] = []
    requests = pool._requests
    now = time.monotonic()
    sweep = now >= getattr(pool, "_chatledger_sweep_at", 0.0)
    if sweep:
        pool._chatledger_sweep_at = now + SWEEP_S
    # (httpcore's PoolRequest.is_queued() is ``connection is None``.)
    reserved = {id(request.connection) for request in requests if request.connection is not None}
    queued = [request for request in requests if request.connection is None]
    kept: list[Any] = []
    idle: list[Any] = []
    for connection in pool._connections:
        if id(connection) in reserved:
            # Serving (or about to serve) a request: kept, even if it closed meanwhile
            # (dropped by the first pass after its request lets it go).
            kept.append(connection)
        elif connection.is_closed():
            continue
        elif connection.is_idle():
            if sweep and connection.has_expired():
                closing.append(connection)
            else:
                kept.append(connection)
                idle.append(connection)
        elif not connection.is_available():
            # Neither idle nor serving a request: its request was cancelled before it
            # connected. httpcore 1.0 keeps such a connection for good.
            closing.append(connection)
        else:
            kept.append(connection)
    surplus = len(idle) - pool._max_keepalive_connections
    if surplus > 0:
        dropped = {id(connection) for connection in idle[:surplus]}
        closing.extend(idle[:surplus])
        idle = idle[surplus:]
        kept = [connection for connection in kept if id(connection) not in dropped]
    pool._connections = kept
    if not queued:
        return closing  # a response closed: nothing to assign

    # An idle connection is reusable; a multiplexing (HTTP/2) one that is available too
    # (an HTTP/1.1 connection is available only when idle).
    available = [*idle]
    if getattr(pool, "_http2", False):
        available.extend(
            connection
            for connection in kept
            if not connection.is_idle() and connection.is_available()
        )
    budget = pool._max_connections - len(kept)
    for request in queued:
        if not available and budget <= 0 and not idle:
            break
        origin = request.request.url.origin
        index = 0
        while index < len(available):
            connection = available[index]
            if not connection.can_handle_request(origin):
                index += 1
                continue
            if connection.is_idle():  # HTTP/1.1, or HTTP/2 with no stream: taken
                del available[index]
                idle.remove(connection)
                if not sweep and connection.has_expired():
                    # Closed by the server, or past its keep-alive: never send on it.
                    pool._connections.remove(connection)
                    closing.append(connection)
                    budget += 1
                    continue
            request.assign_to_connection(connection)
            break
        else:
            if budget <= 0:
                if not idle:
                    continue
                # The pool is full: close an idle connection (to another origin) for it.
                victim = idle.pop(0)
                if victim in available:
                    available.remove(victim)
                pool._connections.remove(victim)
                closing.append(victim)
                budget += 1
            connection = pool.create_connection(origin)
            pool._connections.append(connection)
            request.assign_to_connection(connection)
            budget -= 1
    return closing


class _FixedAsyncPool(httpcore.AsyncConnectionPool):
    def _assign_requests_to_connections(self) -> list[Any]:
        return _assign(self)


class _FixedSyncPool(httpcore.ConnectionPool):
    def _assign_requests_to_connections(self) -> list[Any]:
        return _assign(self)


def _fix(transport: Any, fixed: type) -> None:
    """Give ``transport``'s pool the fixed method, when it is httpcore 1.0's plain pool
    (a proxy's pool, or another httpcore, is left as it is)."""
    pool = getattr(transport, "_pool", None)
    if (
        httpcore.__version__.startswith("1.")
        and pool is not None
        and type(pool) is fixed.__mro__[1]
        and hasattr(pool, "_requests")
        and hasattr(pool, "_connections")
    ):
        pool.__class__ = fixed


def async_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with :data:`LIMITS` and the fixed pool."""
    transport = httpx.AsyncHTTPTransport(limits=LIMITS)
    _fix(transport, _FixedAsyncPool)
    return httpx.AsyncClient(timeout=timeout, limits=LIMITS, transport=transport)


def sync_client(timeout: httpx.Timeout) -> httpx.Client:
    """An ``httpx.Client`` with :data:`LIMITS` and the fixed pool."""
    transport = httpx.HTTPTransport(limits=LIMITS)
    _fix(transport, _FixedSyncPool)
    return httpx.Client(timeout=timeout, limits=LIMITS, transport=transport)
