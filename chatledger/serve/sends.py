"""Sends that run beside the requests that start them.

A send (one ``chat.send_message`` or ``chat.send_message_stream``) runs in a thread of
its own, acting as the requester, and publishes what happens as a list of events
(``chunk``, then ``done`` or ``error``) that any number of readers follow, from the
start or from where they left off (a browser's ``EventSource`` reconnects with
``Last-Event-ID``). So a reply is recorded whole even if the page that asked for it is
closed, and the chat page and the API share one way of sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Any

from ..client import Chat, Client, acting_as
from ..errors import ChatledgerError
from ..types import GenerateContentResponse

__all__ = ["SendJob", "Sender", "SendsBusyError", "error_body"]

logger = logging.getLogger("chatledger.serve")

#: How long a finished send's events stay readable (for a reconnecting page).
KEEP_SECONDS = 300.0
MAX_JOBS = 1000
KEEPALIVE_SECONDS = 15.0


class SendsBusyError(ChatledgerError):
    """Too many sends are running; try again in a moment."""


def error_body(exc: BaseException) -> dict[str, Any]:
    """An error as the API reports it: the library's message (secrets already masked),
    never a traceback. Anything that is not a chatledger error is reported by kind only."""
    if isinstance(exc, ChatledgerError):
        body: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            body["upstream_code"] = code
        return body
    return {
        "type": "InternalError",
        "message": "the server failed while handling this request; its log has the details",
    }


class SendJob:
    """One send and what it has produced so far."""

    def __init__(self, conversation_id: str, actor: str, *, stream: bool) -> None:
        self.id = secrets.token_urlsafe(18)
        self.conversation_id = conversation_id
        self.actor = actor
        self.stream = stream
        self.created = time.monotonic()
        self.finished_at: float | None = None
        #: (kind, data) in order: ``chunk`` ..., then one ``done`` or ``error``.
        self.events: list[tuple[str, dict[str, Any]]] = []
        #: The exception that ended the send, if it failed (for the HTTP status).
        self.exception: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def push(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.events.append((kind, data))
            if kind in ("done", "error"):
                self.finished_at = time.monotonic()
                self._done.set()
            waiters = list(self._waiters)
        for loop, wake in waiters:
            # A reader whose loop is closed is gone.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the send has finished (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)

    async def follow(
        self, start: int = 0, *, keepalive: float = KEEPALIVE_SECONDS
    ) -> AsyncGenerator[tuple[int, str, dict[str, Any]] | None, None]:
        """Yield ``(index, kind, data)`` for each event from ``start`` on, as it comes;
        ``None`` after ``keepalive`` seconds without one (for a keep-alive comment).
        Ends after the ``done`` or ``error`` event."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        with self._lock:
            self._waiters.add(waiter)
        try:
            index = max(start, 0)
            while True:
                wake.clear()
                with self._lock:
                    items = self.events[index:]
                    finished = self._done.is_set()
                for kind, data in items:
                    yield index, kind, data
                    index += 1
                if finished and not items:
                    return
                if items:
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            with self._lock:
                self._waiters.discard(waiter)


def _chunk_data(chunk: GenerateContentResponse) -> dict[str, Any]:
    return {"text": chunk.text or "", "chunk": chunk.to_wire()}


class ChatPool:
    """Chats kept between sends, so that a send does not rebuild its conversation from
    the log each time (a chat catches up on what others appended when it sends). A chat
    is taken out while it is used: two sends to one conversation at once get two chats,
    and the library makes their turns take turns."""

    def __init__(self, client: Client, size: int = 256) -> None:
        self.client = client
        self.size = size
        self._chats: OrderedDict[str, Chat] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, conversation_id: str) -> Chat:
        with self._lock:
            chat = self._chats.pop(conversation_id, None)
        return chat if chat is not None else self.client.chats.get(conversation_id)

    def give(self, chat: Chat) -> None:
        with self._lock:
            self._chats[chat.id] = chat
            self._chats.move_to_end(chat.id)
            while len(self._chats) > self.size:
                self._chats.popitem(last=False)


class Sender:
    """Runs sends for a server: at most ``max_running`` at once (more are refused with
    :class:`SendsBusyError`), each readable for ``keep_seconds`` after it ends."""

    def __init__(
        self,
        client: Client,
        *,
        max_running: int = 8,
        keep_seconds: float = KEEP_SECONDS,
        on_done: Callable[[SendJob], None] | None = None,
    ) -> None:
        self.client = client
        self.keep_seconds = keep_seconds
        self.max_running = max_running
        self._slots = threading.BoundedSemaphore(max_running)
        self._jobs: OrderedDict[str, SendJob] = OrderedDict()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._on_done = on_done
        self.chats = ChatPool(client)

    def get(self, job_id: str) -> SendJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(
        self,
        conversation_id: str,
        message: Any,
        *,
        actor: str,
        stream: bool,
        config: Any = None,
    ) -> SendJob:
        """Start sending ``message`` to the conversation as ``actor``; return at once."""
        if not self._slots.acquire(blocking=False):
            raise SendsBusyError(
                f"{self.max_running} sends are already running on this server; "
                "try again when one has finished"
            )
        job = SendJob(conversation_id, actor, stream=stream)
        with self._lock:
            self._prune()
            self._jobs[job.id] = job
        thread = threading.Thread(
            target=self._run,
            args=(job, message, config),
            name=f"chatledger-send-{conversation_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return job

    def _prune(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and (
                now - job.finished_at > self.keep_seconds or len(self._jobs) > MAX_JOBS
            ):
                del self._jobs[job_id]

    def _run(self, job: SendJob, message: Any, config: Any) -> None:
        try:
            with acting_as(job.actor):
                chat = self.chats.take(job.conversation_id)
                if job.stream:
                    chunks = chat.send_message_stream(message, config=config)
                    try:
                        for chunk in chunks:
                            job.push("chunk", _chunk_data(chunk))
                    finally:
                        close = getattr(chunks, "close", None)
                        if close is not None:
                            close()
                    response = chat.last
                else:
                    response = chat.send_message(message, config=config)
                self.chats.give(chat)
                job.push(
                    "done",
                    {
                        "conversation_id": chat.id,
                        "version": chat.version,
                        "turns": chat.usage.turns,
                        "text": response.text if response is not None else None,
                        "response": response.to_wire() if response is not None else None,
                    },
                )
        except ChatledgerError as exc:
            job.exception = exc
            job.push("error", error_body(exc))
        except Exception as exc:
            logger.exception("send to %s failed", job.conversation_id)
            job.exception = exc
            job.push("error", error_body(exc))
        finally:
            if not job.finished:  # a BaseException (interpreter exit): end the readers
                job.push("error", {"type": "InternalError", "message": "the send was stopped"})
            self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())
            if self._on_done is not None:
                self._on_done(job)

    def close(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` seconds for running sends to be recorded."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
