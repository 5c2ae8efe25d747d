"""``Client``: where the log lives, who is writing, and how models are reached."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import datetime
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import pydantic

from ..errors import InvalidInputError, register_secret
from ..events import open_store
from ..events.envelope import validate_conversation_id
from ..events.erasing import ErasureReport, erase, validate_subject
from ..events.kinds import ConfigChanged, ConversationStarted
from ..events.store import EventStore
from ..projections.history import HistoryState
from ..projections.usage import UsageState
from ..readmodels.conversations import forget
from ..types import (
    ContentOrDict,
    GenerateContentConfig,
    GenerateContentConfigOrDict,
    HttpOptions,
    HttpOptionsOrDict,
)
from ._chat import AsyncChat, Chat
from ._conversation import Conversation, load_conversation
from ._convert import config_to_wire, history_to_wire, parse_config
from ._functions import declare
from ._listing import conversation_tree, list_conversations
from ._retry import RetryPolicy
from ._settings import (
    ConversationSettings,
    current_actor,
    default_actor,
    validate_actor,
    validate_model,
    validate_timeouts,
)
from ._summaries import BranchNode, ChatSummary
from ._telemetry import make_telemetry
from .transports._http import register_secret_headers
from .transports.base import Transport
from .transports.gemini import GeminiTransport, check_model_name
from .transports.vertex import (
    VertexSettings,
    VertexTransport,
    check_vertex_config,
    resolve_vertex,
)

__all__ = ["AsyncChats", "AsyncClient", "BranchNode", "ChatSummary", "Chats", "Client"]

logger = logging.getLogger("chatledger")

#: Threads that record what ``client.aio.chats.create`` / ``get`` start from an event loop
#: (docs/performance.md#event-loop): per client, a few are enough, since
#: the store serialises its writes.
_STORE_THREADS = 4


def _parse_http_options(http_options: Any) -> HttpOptions | None:
    if http_options is None or isinstance(http_options, HttpOptions):
        return http_options
    try:
        return HttpOptions.model_validate(http_options)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(f"invalid http_options: {exc}") from None


LOCAL_MODEL_NAMES = frozenset({"local", "smollm2", "smollm2-135m", "smollm2-135m-instruct"})


def transport_kind(model: str, http_options: HttpOptions | None) -> str:
    """Which transport serves ``model``: "local", "openai" or "gemini"."""
    name = model.strip().lower()
    if name == "local" or name.startswith("local/"):
        return "local"
    if name.startswith("openai/"):
        return "openai"
    base_url = http_options.base_url if http_options is not None else None
    if base_url and urlsplit(base_url).path.rstrip("/").endswith("/v1"):
        # An OpenAI-compatible server was named: "smollm2" is then the model it serves.
        return "openai"
    if name in LOCAL_MODEL_NAMES:
        return "local"
    return "gemini"


class Client:
    """The entry point: ``client.chats`` (sync) and ``client.aio.chats`` (async).

    ``store`` is a store object, a path, ``":memory:"`` or a URL; when not given,
    ``CHATLEDGER_DB`` if set, else an in-memory store (nothing is written to disk unless
    asked). ``api_key`` falls back to ``GEMINI_API_KEY``, then ``GOOGLE_API_KEY`` (for an
    OpenAI-compatible server: to ``OPENAI_API_KEY``).
    ``actor`` is recorded on every event (default: the OS user). ``busy_timeout`` is how
    long a send waits for another writer's open turn (seconds); ``turn_lease`` how long
    after its last event a turn of this client's may stay open before others may close
    it (seconds, at most an hour).

    ``tracer_provider``: where the OpenTelemetry spans of model and function calls go
    (default: the global tracer provider, when the ``opentelemetry`` package is
    installed; without it there are no spans and nothing of it is imported).
    ``capture_message_content``: put message contents on those spans (default: what
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says, else no). See
    docs/integrations.md#opentelemetry.

    ``client.settings`` (:class:`ConversationSettings`) is all a conversation sees of its
    client: the store, the actor, the timeouts, the retry policy, the transports and the
    telemetry.

    Vertex AI (docs/chat-api.md, "Vertex AI"): ``vertexai=True`` (or
    ``GOOGLE_GENAI_USE_VERTEXAI=true``) with ``project`` and ``location`` (or
    ``GOOGLE_CLOUD_PROJECT`` / ``GOOGLE_CLOUD_LOCATION``) and ``credentials`` (a
    ``google.auth`` credentials object; Application Default Credentials when not given),
    or with an API key alone (express mode), chosen as google-genai 3.3.0 chooses them.
    Gemini models are then served by Vertex AI; ``local`` and OpenAI-compatible models
    are unaffected. ``enterprise`` is google-genai's newer name for ``vertexai``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        http_options: HttpOptionsOrDict | None = None,
        store: Any = None,
        actor: str | None = None,
        transport: Transport | None = None,
        busy_timeout: float = 10.0,
        turn_lease: float = 600.0,
        vertexai: bool | None = None,
        project: str | None = None,
        location: str | None = None,
        credentials: Any = None,
        enterprise: bool | None = None,
        tracer_provider: Any = None,
        capture_message_content: bool | None = None,
    ) -> None:
        self.http_options = _parse_http_options(http_options)
        #: How Vertex AI is reached, or None for the Gemini Developer API.
        if enterprise is not None and vertexai is not None and enterprise != vertexai:
            raise InvalidInputError(
                "enterprise and vertexai have conflicting values: set enterprise only "
                "(it is google-genai's newer name for vertexai)"
            )
        self.vertex: VertexSettings | None = resolve_vertex(
            vertexai=enterprise if enterprise is not None else vertexai,
            api_key=api_key,
            credentials=credentials,
            project=project,
            location=location,
            http_options=self.http_options,
        )
        self._api_key = (
            api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        )
        register_secret(self._api_key)
        # An OpenAI-compatible server gets the key given here, or OPENAI_API_KEY: never a
        # Gemini key from the environment, which must not travel to another server.
        self._openai_api_key = api_key or os.environ.get("OPENAI_API_KEY")
        register_secret(self._openai_api_key)
        if self.http_options is not None:
            register_secret_headers(self.http_options.headers)
        try:
            retry_policy = RetryPolicy.from_options(
                self.http_options.retry_options if self.http_options is not None else None
            )
        except ValueError as exc:
            raise InvalidInputError(f"invalid http_options.retry_options: {exc}") from None
        if actor is not None:
            validate_actor(actor)
        busy_timeout, turn_lease = validate_timeouts(busy_timeout, turn_lease)
        if capture_message_content is not None and not isinstance(capture_message_content, bool):
            raise InvalidInputError(
                "capture_message_content must be True, False or None (None: as "
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT says)"
            )
        if tracer_provider is not None and not callable(
            getattr(tracer_provider, "get_tracer", None)
        ):
            raise InvalidInputError(
                "tracer_provider must be an OpenTelemetry TracerProvider (with get_tracer), "
                f"got {type(tracer_provider).__name__}"
            )
        self._owns_store = not isinstance(store, EventStore)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._background: set[concurrent.futures.Future[Any]] = set()
        self._transport_override = transport
        self._transports: dict[str, Transport] = {}
        # What every conversation of this client is given (and all it sees of the client).
        self.settings = ConversationSettings(
            store=open_store(store),
            actor=actor or default_actor(),
            busy_timeout=busy_timeout,
            turn_lease=turn_lease,
            retry_policy=retry_policy,
            transport_for=self.transport_for,
            telemetry=make_telemetry(tracer_provider, capture_message_content),
        )
        self.chats = Chats(self)
        self.aio = AsyncClient(self)

    @property
    def store(self) -> EventStore:
        """The event log this client reads and writes."""
        return self.settings.store

    @property
    def actor(self) -> str:
        """Recorded on every event this client writes (unless :func:`acting_as` says
        otherwise)."""
        return self.settings.actor

    @property
    def busy_timeout(self) -> float:
        """Seconds a send waits for another writer's open turn."""
        return self.settings.busy_timeout

    @property
    def turn_lease(self) -> float:
        """Seconds others wait after this client's last event before closing its turn."""
        return self.settings.turn_lease

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """When failed model calls are retried (None: never, the default)."""
        return self.settings.retry_policy

    def __repr__(self) -> str:
        return f"<chatledger.Client store={self.store.location!r} actor={self.actor!r}>"

    def transport_for(self, model: str) -> Transport:
        """The transport that serves ``model`` (one per kind, reused by every chat).

        ``local`` / ``smollm2`` (or ``local/...``): the embedded SmolLM2 model. A model
        named ``openai/<name>``, or a ``base_url`` whose path ends in ``/v1`` (vLLM,
        llama.cpp's server, Ollama, OpenAI): the OpenAI-compatible transport; with such a
        ``base_url``, ``smollm2`` is the name of the server's model (only ``local`` and
        ``local/...`` stay in process). Anything else: the Gemini API, or Vertex AI when the client
        was made for it (docs/chat-api.md).
        """
        if self._transport_override is not None:
            return self._transport_override
        kind = transport_kind(model, self.http_options)
        transport = self._transports.get(kind)
        if transport is None:
            transport = self._make_transport(kind)
            self._transports[kind] = transport
        return transport

    def _make_transport(self, kind: str) -> Transport:
        if kind == "local":
            from .transports.local import LocalTransport

            return LocalTransport(http_options=self.http_options)
        if kind == "openai":
            from .transports.openai import OpenAITransport

            return OpenAITransport(self._openai_api_key, self.http_options)
        if self.vertex is not None:
            return VertexTransport(self.vertex, self.http_options)
        return GeminiTransport(self._api_key, self.http_options)

    def _in_background(
        self, work: Callable[[], Conversation]
    ) -> concurrent.futures.Future[Conversation]:
        """Run store ``work`` in one of this client's threads, in the caller's context
        (:func:`acting_as`), so that an event loop calling it is not blocked."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    _STORE_THREADS, thread_name_prefix="chatledger-store"
                )
            future = self._executor.submit(contextvars.copy_context().run, work)
            self._background.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._executor_lock:
            self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            # Raised again by the chat's next call; logged too, in case none comes.
            logger.warning("could not open an async chat: %s", future.exception())

    def _drain_background(self) -> None:
        """Wait for the store work started in the background (before the store closes)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def close(self) -> None:
        """Close transports, and the store if this client opened it."""
        self._drain_background()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        if self._owns_store:
            self.store.close()
            forget(self.store)

    async def aclose(self) -> None:
        """Close transports, and the store if this client opened it (after the store work
        of chats opened in the background)."""
        with self._executor_lock:
            pending = list(self._background)
        for future in pending:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
        await asyncio.to_thread(self._drain_background)
        for transport in self._transports.values():
            await transport.aclose()
        self._transports.clear()
        if self._owns_store:
            self.store.close()
            forget(self.store)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- shared by Chats

    def _start(
        self,
        model: str,
        config: GenerateContentConfigOrDict | None,
        history: Sequence[ContentOrDict] | None,
        subject: str | None = None,
    ) -> Conversation:
        conversation, started = self._new(model, config, history, subject)
        conversation.append([started])
        return conversation

    def _new(
        self,
        model: str,
        config: GenerateContentConfigOrDict | None,
        history: Sequence[ContentOrDict] | None,
        subject: str | None = None,
    ) -> tuple[Conversation, ConversationStarted]:
        """A new conversation, checked (nothing written yet), and its first event."""
        validate_model(model)
        if subject is not None:
            validate_subject(subject)
        if (
            self._transport_override is None
            and transport_kind(model, self.http_options) == "gemini"
        ):
            check_model_name(model)  # refused now, not at the first send
        live = parse_config(config)
        config_wire = config_to_wire(live, declare)
        if (
            self.vertex is not None
            and self._transport_override is None
            and transport_kind(model, self.http_options) == "gemini"
        ):
            check_vertex_config(config_wire)
        history_wire = history_to_wire(history)
        # The transport is built now, its settings (base_url, ...) checked: a chat that
        # could never send is refused before anything is written.
        self.transport_for(model)
        conversation = Conversation(
            self.settings, str(uuid.uuid4()), HistoryState(), UsageState(), live
        )
        conversation.subject = subject
        return conversation, ConversationStarted(
            model=model, config=config_wire, history=history_wire
        )

    def erase(
        self,
        conversation_id: str | None = None,
        *,
        reason: str,
        subject: str | None = None,
        older_than: str | datetime.timedelta | None = None,
        vacuum: bool = False,
    ) -> ErasureReport:
        """Erase the content of one conversation (and its forks), of every conversation
        created with ``subject``, or of every event older than ``older_than`` (``"30d"``,
        or a timedelta), keeping every hash: see docs/erasure.md and
        :func:`chatledger.erase`. The erasure is recorded as a ``content_erased`` event
        by this client's actor (or :func:`acting_as`'s), with ``reason``."""
        return erase(
            self.store,
            reason=reason,
            actor=current_actor() or self.settings.actor,
            conversation_id=conversation_id,
            subject=subject,
            older_than=older_than,
            vacuum=vacuum,
        )

    def _resume(
        self, conversation_id: str, config: GenerateContentConfigOrDict | None
    ) -> Conversation:
        validate_conversation_id(conversation_id)
        return self._load(conversation_id, parse_config(config))

    def _load(self, conversation_id: str, live: GenerateContentConfig | None) -> Conversation:
        """Fold a conversation from the log; record ``live`` if it changes the config."""
        conversation = load_conversation(self.settings, conversation_id, live)
        if live is not None:
            wire = config_to_wire(live, declare)
            if wire != conversation.history.config:
                conversation.wait_for_turn()
                conversation.append([ConfigChanged(config=wire)])
        return conversation


class Chats:
    """Creates and resumes synchronous chats."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        config: GenerateContentConfigOrDict | None = None,
        history: Sequence[ContentOrDict] | None = None,
        subject: str | None = None,
    ) -> Chat:
        """Start a new conversation (recorded at once) and return its chat.

        ``subject`` (chatledger's own keyword): an id of the person the conversation is
        about, such as your end user's id, recorded in its first event's metadata so that
        ``client.erase(subject=...)`` finds it (docs/erasure.md)."""
        return Chat(self._client._start(model, config, history, subject))

    def get(
        self, conversation_id: str, *, config: GenerateContentConfigOrDict | None = None
    ) -> Chat:
        """Resume a conversation from the log, in this or any process.

        Pass ``config`` to give the chat its Python function tools again (the log keeps
        only their declarations); a config that differs from the recorded one is
        recorded as a change.
        """
        return Chat(self._client._resume(conversation_id, config))

    def list(self, *, limit: int | None = None, parent_id: str | None = None) -> list[ChatSummary]:
        """Conversations, most recently updated first; with ``parent_id``, its forks."""
        return list_conversations(self._client.store, limit, parent_id)

    def tree(self, conversation_id: str) -> BranchNode:
        """The tree of forks that ``conversation_id`` belongs to, from its root."""
        return conversation_tree(self._client.store, conversation_id)


class AsyncChats:
    """Creates and resumes async chats (``client.aio.chats``).

    Called from a running event loop, ``create`` and ``get`` return at once: the chat's
    start is recorded (or its events folded) in a worker thread, and the chat's first
    awaited call waits for it, raising its error if it failed (see docs/chat-api.md).
    Without a running loop they work as the sync ``client.chats`` do.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        config: GenerateContentConfigOrDict | None = None,
        history: Sequence[ContentOrDict] | None = None,
        subject: str | None = None,
    ) -> AsyncChat:
        """Start a new conversation and return its chat (recorded in the background when
        a loop is running)."""
        conversation, started = self._client._new(model, config, history, subject)
        if not _loop_running():
            conversation.append([started])
            return AsyncChat(conversation)

        def record() -> Conversation:
            conversation.append([started])
            return conversation

        return AsyncChat._opening(conversation.id, self._client._in_background(record))

    def get(
        self, conversation_id: str, *, config: GenerateContentConfigOrDict | None = None
    ) -> AsyncChat:
        """Resume a conversation (folded in the background when a loop is running: an
        unknown id is then raised by the chat's first awaited call)."""
        validate_conversation_id(conversation_id)
        live = parse_config(config)
        if not _loop_running():
            return AsyncChat(self._client._load(conversation_id, live))
        return AsyncChat._opening(
            conversation_id,
            self._client._in_background(lambda: self._client._load(conversation_id, live)),
        )

    async def list(
        self, *, limit: int | None = None, parent_id: str | None = None
    ) -> list[ChatSummary]:
        """As :meth:`Chats.list`, read in a worker thread."""
        return await asyncio.to_thread(list_conversations, self._client.store, limit, parent_id)

    async def tree(self, conversation_id: str) -> BranchNode:
        """As :meth:`Chats.tree`, read in a worker thread."""
        return await asyncio.to_thread(conversation_tree, self._client.store, conversation_id)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class AsyncClient:
    """``client.aio``: the async side of a :class:`Client`, sharing its store."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.chats = AsyncChats(client)

    async def aclose(self) -> None:
        await self._client.aclose()
