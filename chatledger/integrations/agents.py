"""openai-agents sessions kept in chatledger's log (``pip install 'chatledger[agents]'``).

:class:`ChatledgerSession` follows the OpenAI Agents SDK's ``Session`` protocol, so an
agent built on that SDK keeps its history in the log::

    from agents import Agent, Runner
    from chatledger.integrations.agents import ChatledgerSession

    session = ChatledgerSession("support-ticket-42", "chats.db")
    result = await Runner.run(agent, "Where is my parcel?", session=session)

Each ``add_items`` is one ``session_items_added`` event holding the items exactly as the
SDK gave them (they come back equal, keys in the same order); ``pop_item`` and
``clear_session`` are events too, so nothing is deleted: ``get_items_as_of`` reads the
session as it was at any version, :meth:`ChatledgerSession.fork` starts a new session
from any point, and ``verify`` checks every item against the hash chain. The session is
the conversation ``session_id`` of the log: ``chatledger log support-ticket-42`` shows it.
See ``docs/integrations.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import anyio.to_thread
from agents.items import TResponseInputItem
from agents.memory import SessionSettings

from ..events import RecordedEvent, VerificationReport
from ._session_log import SessionLog

__all__ = ["INTEGRATION", "ChatledgerSession"]

#: The ``model`` of a session's ``conversation_started`` event, and its ``integration``.
INTEGRATION = "openai-agents"

T = TypeVar("T")


async def _in_thread(function: Callable[[], T]) -> T:
    # The stores block (sqlite3, psycopg): run them off the event loop. A cancelled caller
    # waits for the thread, so a write that started is never left half-known.
    return await anyio.to_thread.run_sync(function)


class ChatledgerSession:
    """An openai-agents ``Session`` whose items are events of chatledger's log.

    ``session_id`` is the conversation id (at most 200 printable characters). ``store``
    is a :class:`chatledger.Client` (its store and actor are used), an ``EventStore``, a
    path, ``":memory:"`` or a URL (``None``: ``CHATLEDGER_DB``, else memory, like
    ``SQLiteSession``'s default). ``actor`` is recorded on every event (default: the
    client's, else the OS user; ``chatledger.acting_as`` overrides both).
    ``session_settings`` are the SDK's (``limit``: how many of the latest items
    ``get_items`` returns by default).

    Opening a conversation that is not an openai-agents session (a chat, a LangChain
    history) raises :class:`~chatledger.InvalidInputError` at the first read or write.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        store: Any = None,
        *,
        actor: str | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self._log = SessionLog(store, session_id, integration=INTEGRATION, actor=actor)
        self.session_id = session_id
        if isinstance(session_settings, dict):
            session_settings = SessionSettings(**session_settings)
        self.session_settings = session_settings or SessionSettings()

    def __repr__(self) -> str:
        return f"<ChatledgerSession {self.session_id!r} in {self._log.store.location!r}>"

    @property
    def store(self) -> Any:
        """The :class:`~chatledger.events.EventStore` holding this session."""
        return self._log.store

    @property
    def version(self) -> int:
        """The version of the last event this session has read or written."""
        return self._log.version

    # ----------------------------------------------------------------- the Session protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first; with ``limit`` (or the settings' limit),
        only the latest ``limit`` of them."""
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        items = await _in_thread(lambda: self._log.items(limit))
        return cast("list[TResponseInputItem]", items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` to the session: one ``session_items_added`` event."""
        await _in_thread(lambda: self._log.add(cast("list[dict[str, Any]]", items)))

    async def pop_item(self) -> TResponseInputItem | None:
        """Take off the most recent item and return it (None when there is none). The
        item stays in the log; a ``session_item_popped`` event names it."""
        item = await _in_thread(self._log.pop)
        return cast("TResponseInputItem | None", item)

    async def clear_session(self) -> None:
        """Take off every item: one ``session_cleared`` event. Nothing is deleted."""
        await _in_thread(self._log.clear)

    # ----------------------------------------------------------------- what the log adds

    async def get_items_as_of(self, version: int) -> list[TResponseInputItem]:
        """The items as they were once the event at ``version`` was written."""
        items = await _in_thread(lambda: self._log.items_as_of(version))
        return cast("list[TResponseInputItem]", items)

    async def fork(
        self, session_id: str | None = None, *, at: int | None = None
    ) -> ChatledgerSession:
        """A new session starting from this one's items at version ``at`` (default: now),
        in the same store. ``session_id`` defaults to a new UUID."""
        new_id = session_id if session_id is not None else str(uuid.uuid4())
        await _in_thread(lambda: self._log.fork(new_id, at=at))
        fork = ChatledgerSession.__new__(ChatledgerSession)
        fork._log = self._log.sibling(new_id)
        fork.session_id = new_id
        fork.session_settings = self.session_settings
        return fork

    async def events(self) -> list[RecordedEvent]:
        """Every event of this session, oldest first (``event.data.items`` for adds)."""
        return await _in_thread(self._log.events)

    async def verify(self) -> VerificationReport:
        """Check this session's hash chain; ``report.ok`` is True when nothing is wrong."""
        return await _in_thread(self._log.verify)

    def close(self) -> None:
        """Stop using the session; closes the store if it was opened from a path or URL."""
        self._log.close()
