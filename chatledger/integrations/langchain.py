"""A LangChain chat message history kept in chatledger's log
(``pip install 'chatledger[langchain]'``).

:class:`ChatledgerMessageHistory` is a ``langchain_core`` ``BaseChatMessageHistory``::

    from langchain_core.messages import HumanMessage
    from chatledger.integrations.langchain import ChatledgerMessageHistory

    history = ChatledgerMessageHistory("support-ticket-42", "chats.db")
    answer = chain.invoke({"history": history.messages, "question": question})
    history.add_messages([HumanMessage(content=question), answer])

It also works as the store of ``RunnableWithMessageHistory`` (which langchain-core 1.x
deprecates in favour of LangGraph's persistence, but still ships).

Messages are stored as LangChain serialises them (``message_to_dict``: the type and every
field, tool calls and metadata included) and come back equal. ``clear()`` is an event
(``session_cleared``): nothing is deleted, so ``messages_as_of`` reads the history as it
was at any version, :meth:`ChatledgerMessageHistory.fork` starts a new history from any
point, and ``verify`` checks every message against the hash chain. See
``docs/integrations.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pydantic
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from ..errors import IntegrityError, InvalidInputError
from ..events import EventStore, RecordedEvent, VerificationReport
from ._session_log import SessionLog

__all__ = ["INTEGRATION", "ChatledgerMessageHistory"]

#: The ``model`` of a history's ``conversation_started`` event, and its ``integration``.
INTEGRATION = "langchain"


class ChatledgerMessageHistory(BaseChatMessageHistory):
    """A LangChain message history whose messages are events of chatledger's log.

    ``session_id`` is the conversation id (at most 200 printable characters). ``store``
    is a :class:`chatledger.Client` (its store and actor are used), an ``EventStore``, a
    path, ``":memory:"`` or a URL (``None``: ``CHATLEDGER_DB``, else memory). ``actor``
    is recorded on every event (default: the client's, else the OS user;
    ``chatledger.acting_as`` overrides both).

    Thread-safe; several processes may share one history (each write reads what others
    appended first). Opening a conversation that is not a LangChain history raises
    :class:`~chatledger.InvalidInputError` at the first read or write.
    """

    def __init__(self, session_id: str, store: Any = None, *, actor: str | None = None) -> None:
        self._log = SessionLog(
            store, session_id, integration=INTEGRATION, actor=actor, noun="message"
        )
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"<ChatledgerMessageHistory {self.session_id!r} in {self._log.store.location!r}>"

    @property
    def store(self) -> EventStore:
        """The store holding this history."""
        return self._log.store

    @property
    def version(self) -> int:
        """The version of the last event this history has read or written."""
        return self._log.version

    # ----------------------------------------------------------------- BaseChatMessageHistory

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The messages, oldest first (read from the log: another process's are included)."""
        return self._to_messages(self._log.items())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one ``session_items_added`` event."""
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            raise InvalidInputError(
                f"messages must be a list of LangChain messages, got {type(messages).__name__}"
            )
        for index, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise InvalidInputError(
                    f"message {index} is a {type(message).__name__}, not a LangChain message "
                    "(HumanMessage, AIMessage, ...)"
                )
        self._log.add([message_to_dict(message) for message in messages])

    def clear(self) -> None:
        """Take off every message: one ``session_cleared`` event. Nothing is deleted."""
        self._log.clear()

    # ----------------------------------------------------------------- what the log adds

    def messages_as_of(self, version: int) -> list[BaseMessage]:
        """The messages as they were once the event at ``version`` was written."""
        return self._to_messages(self._log.items_as_of(version))

    def fork(
        self, session_id: str | None = None, *, at: int | None = None
    ) -> ChatledgerMessageHistory:
        """A new history starting from this one's messages at version ``at`` (default:
        now), in the same store. ``session_id`` defaults to a new UUID."""
        new_id = session_id if session_id is not None else str(uuid.uuid4())
        self._log.fork(new_id, at=at)
        fork = ChatledgerMessageHistory.__new__(ChatledgerMessageHistory)
        fork._log = self._log.sibling(new_id)
        fork.session_id = new_id
        return fork

    def events(self) -> list[RecordedEvent]:
        """Every event of this history, oldest first."""
        return self._log.events()

    def verify(self) -> VerificationReport:
        """Check this history's hash chain; ``report.ok`` is True when nothing is wrong."""
        return self._log.verify()

    def close(self) -> None:
        """Stop using the history; closes the store if it was opened from a path or URL."""
        self._log.close()

    def _to_messages(self, items: list[dict[str, Any]]) -> list[BaseMessage]:
        try:
            return messages_from_dict(items)
        except (KeyError, TypeError, ValueError, pydantic.ValidationError) as exc:
            raise IntegrityError(
                f"history {self.session_id!r} holds an item that is not a LangChain message "
                f"({type(exc).__name__}: {str(exc)[:200]}); it was not written by this "
                "class: run verify, and check where the log came from"
            ) from None
