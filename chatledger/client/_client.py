"""``Client``: where the log lives, who is writing, and how models are reached."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pydantic

from ..errors import InvalidInputError, NotFoundError, register_secret
from ..events import open_store
from ..events.envelope import validate_conversation_id
from ..events.kinds import ConfigChanged, ConversationStarted, UserMessageAdded
from ..events.store import EventStore, StreamInfo
from ..projections.history import HistoryState
from ..projections.usage import UsageState
from ..types import HttpOptions
from ._chat import AsyncChat, Chat
from ._conversation import (
    Conversation,
    FoldCache,
    default_actor,
    fold_events,
    load_conversation,
    validate_actor,
    validate_model,
)
from ._convert import config_to_wire, history_to_wire, parse_config
from ._functions import declare
from ._retry import RetryPolicy
from .transports._http import register_secret_headers
from .transports.base import Transport
from .transports.gemini import GeminiTransport, check_model_name

__all__ = ["AsyncChats", "AsyncClient", "BranchNode", "ChatSummary", "Chats", "Client"]


class ChatSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``chats.list()``."""

    conversation_id: str
    model: str
    turns: int
    version: int
    created_at: str
    updated_at: str
    parent_id: str | None = None
    parent_version: int | None = None


class BranchNode(msgspec.Struct, kw_only=True):
    """One conversation in a tree of forks (``chats.tree``)."""

    summary: ChatSummary
    #: The first words of the first message this branch added (where it diverges).
    divergence: str
    children: list[BranchNode] = msgspec.field(default_factory=list)

    @property
    def conversation_id(self) -> str:
        return self.summary.conversation_id

    def walk(self, depth: int = 0) -> Iterator[tuple[int, BranchNode]]:
        """Every node, depth first, with its depth (the root is 0)."""
        # Iterative: a chain of forks may be deeper than Python's recursion limit.
        stack: list[tuple[int, BranchNode]] = [(depth, self)]
        while stack:
            level, node = stack.pop()
            yield level, node
            stack.extend((level + 1, child) for child in reversed(node.children))


def _first_words(content: dict[str, Any], words: int = 8) -> str:
    text = " ".join(
        part["text"]
        for part in content.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ).split()
    return " ".join(text[:words]) + (" ..." if len(text) > words else "")


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
    a turn may stay open before others may close it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        http_options: HttpOptions | dict[str, Any] | None = None,
        store: Any = None,
        actor: str | None = None,
        transport: Transport | None = None,
        busy_timeout: float = 10.0,
        turn_lease: float = 600.0,
    ) -> None:
        self._api_key = (
            api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        )
        register_secret(self._api_key)
        # An OpenAI-compatible server gets the key given here, or OPENAI_API_KEY: never a
        # Gemini key from the environment, which must not travel to another server.
        self._openai_api_key = api_key or os.environ.get("OPENAI_API_KEY")
        register_secret(self._openai_api_key)
        self.http_options = _parse_http_options(http_options)
        if self.http_options is not None:
            register_secret_headers(self.http_options.headers)
        try:
            self.retry_policy = RetryPolicy.from_options(
                self.http_options.retry_options if self.http_options is not None else None
            )
        except ValueError as exc:
            raise InvalidInputError(f"invalid http_options.retry_options: {exc}") from None
        if actor is not None:
            validate_actor(actor)
        if busy_timeout < 0 or turn_lease <= 0:
            raise InvalidInputError("busy_timeout must be >= 0 and turn_lease > 0 (seconds)")
        self._owns_store = not isinstance(store, EventStore)
        self.store: EventStore = open_store(store)
        self.actor = actor or default_actor()
        self.busy_timeout = float(busy_timeout)
        self.turn_lease = float(turn_lease)
        self._transport_override = transport
        self._transports: dict[str, Transport] = {}
        self.chats = Chats(self)
        self.aio = AsyncClient(self)

    def __repr__(self) -> str:
        return f"<chatledger.Client store={self.store.location!r} actor={self.actor!r}>"

    def transport_for(self, model: str) -> Transport:
        """The transport that serves ``model`` (one per kind, reused by every chat).

        ``local`` / ``smollm2`` (or ``local/...``): the embedded SmolLM2 model. A model
        named ``openai/<name>``, or a ``base_url`` whose path ends in ``/v1`` (vLLM,
        llama.cpp's server, Ollama, OpenAI): the OpenAI-compatible transport; with such a
        ``base_url``, ``smollm2`` is the name of the server's model (only ``local`` and
        ``local/...`` stay in process). Anything else: the Gemini API.
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
        return GeminiTransport(self._api_key, self.http_options)

    def close(self) -> None:
        """Close transports, and the store if this client opened it."""
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()
        self._transports.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- shared by Chats

    def _start(self, model: Any, config: Any, history: Any) -> Conversation:
        validate_model(model)
        if (
            self._transport_override is None
            and transport_kind(model, self.http_options) == "gemini"
        ):
            check_model_name(model)  # refused now, not at the first send
        live = parse_config(config)
        config_wire = config_to_wire(live, declare)
        history_wire = history_to_wire(history)
        conversation = Conversation(self, str(uuid.uuid4()), HistoryState(), UsageState(), live)
        conversation.append(
            [ConversationStarted(model=model, config=config_wire, history=history_wire)]
        )
        return conversation

    def _resume(self, conversation_id: Any, config: Any) -> Conversation:
        validate_conversation_id(conversation_id)
        live = parse_config(config)
        conversation = load_conversation(self, conversation_id, live)
        if live is not None:
            wire = config_to_wire(live, declare)
            if wire != conversation.history.config:
                conversation.wait_for_turn()
                conversation.append([ConfigChanged(config=wire)])
        return conversation

    def _summary(self, info: StreamInfo, cache: FoldCache | None = None) -> ChatSummary:
        history, _usage, _ = fold_events(self.store, info.conversation_id, cache=cache)
        return ChatSummary(
            conversation_id=info.conversation_id,
            model=history.model,
            turns=len(history.turns),
            version=info.version,
            created_at=info.created_at,
            updated_at=info.updated_at,
            parent_id=info.parent_id,
            parent_version=info.parent_version,
        )

    def _list(self, limit: int | None, parent_id: str | None = None) -> list[ChatSummary]:
        infos = self.store.conversations(limit=limit, parent_id=parent_id)
        return [self._summary(info) for info in infos]

    def _tree(self, conversation_id: str) -> BranchNode:
        validate_conversation_id(conversation_id)
        info = self.store.stream_info(conversation_id)
        if info is None:
            raise NotFoundError(f"no conversation {conversation_id!r} in {self.store.location}")
        seen = {info.conversation_id}
        while info.parent_id is not None:  # up to the root
            parent = self.store.stream_info(info.parent_id)
            if parent is None or parent.conversation_id in seen:
                break
            seen.add(parent.conversation_id)
            info = parent

        cache: FoldCache = {}  # each fork's fold starts from its parent's

        def node(stream: StreamInfo) -> BranchNode:
            first = next(
                (
                    e.data
                    for e in self.store.read(stream.conversation_id)
                    if isinstance(e.data, UserMessageAdded)
                ),
                None,
            )
            return BranchNode(
                summary=self._summary(stream, cache),
                divergence=_first_words(first.content) if first is not None else "",
            )

        # Without recursion: a chain of forks may be thousands deep.
        root = node(info)
        placed = {root.conversation_id}
        pending = [root]
        while pending:
            branch = pending.pop()
            for child in reversed(self.store.conversations(parent_id=branch.conversation_id)):
                if child.conversation_id in placed:
                    continue
                placed.add(child.conversation_id)
                branch.children.append(node(child))
            pending.extend(branch.children)
        return root


class Chats:
    """Creates and resumes synchronous chats."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, model: str, config: Any = None, history: Any = None) -> Chat:
        """Start a new conversation (recorded at once) and return its chat."""
        return Chat(self._client._start(model, config, history))

    def get(self, conversation_id: str, *, config: Any = None) -> Chat:
        """Resume a conversation from the log, in this or any process.

        Pass ``config`` to give the chat its Python function tools again (the log keeps
        only their declarations); a config that differs from the recorded one is
        recorded as a change.
        """
        return Chat(self._client._resume(conversation_id, config))

    def list(self, *, limit: int | None = None, parent_id: str | None = None) -> list[ChatSummary]:
        """Conversations, most recently updated first; with ``parent_id``, its forks."""
        return self._client._list(limit, parent_id)

    def tree(self, conversation_id: str) -> BranchNode:
        """The tree of forks that ``conversation_id`` belongs to, from its root."""
        return self._client._tree(conversation_id)


class AsyncChats:
    """Creates and resumes async chats (``client.aio.chats``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, model: str, config: Any = None, history: Any = None) -> AsyncChat:
        return AsyncChat(self._client._start(model, config, history))

    def get(self, conversation_id: str, *, config: Any = None) -> AsyncChat:
        return AsyncChat(self._client._resume(conversation_id, config))

    def list(self, *, limit: int | None = None, parent_id: str | None = None) -> list[ChatSummary]:
        return self._client._list(limit, parent_id)

    def tree(self, conversation_id: str) -> BranchNode:
        return self._client._tree(conversation_id)


class AsyncClient:
    """``client.aio``: the async side of a :class:`Client`, sharing its store."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.chats = AsyncChats(client)

    async def aclose(self) -> None:
        await self._client.aclose()
