"""chatledger: an event-sourced conversation store with Gemini's chat API on top.

import chatledger
client = chatledger.Client(store="chats.db")
chat = client.chats.create(model="gemini-2.5-flash")
print(chat.send_message("Hello").text)
for event in chat.events():
    print(event.version, event.type)
"""

from . import errors, events, projections, types
from ._version import __version__
from .client import (
    AsyncChat,
    AsyncChats,
    AsyncClient,
    BranchNode,
    Chat,
    Chats,
    ChatSummary,
    Client,
    ReplayReport,
    ReplayTransport,
    acting_as,
    replay_conversation,
    verify_log,
)
from .errors import (
    APIError,
    ChatledgerError,
    ChatStateError,
    ClientError,
    ConcurrencyError,
    ConversationBusyError,
    FunctionCallingError,
    IntegrityError,
    InvalidInputError,
    InvalidResponseError,
    ModelConnectionError,
    ModelTimeoutError,
    NotFoundError,
    ReplayMismatchError,
    ServerError,
    StoreError,
    StoreUnavailableError,
)
from .events import EventStore, MemoryStore, RecordedEvent, SQLiteStore, open_store
from .events.audit import export_conversation, import_lines
from .events.erasing import ErasureReport, erase

__all__ = [
    "APIError",
    "AsyncChat",
    "AsyncChats",
    "AsyncClient",
    "BranchNode",
    "Chat",
    "ChatStateError",
    "ChatSummary",
    "ChatledgerError",
    "Chats",
    "Client",
    "ClientError",
    "ConcurrencyError",
    "ConversationBusyError",
    "ErasureReport",
    "EventStore",
    "FunctionCallingError",
    "IntegrityError",
    "InvalidInputError",
    "InvalidResponseError",
    "MemoryStore",
    "ModelConnectionError",
    "ModelTimeoutError",
    "NotFoundError",
    "RecordedEvent",
    "ReplayMismatchError",
    "ReplayReport",
    "ReplayTransport",
    "SQLiteStore",
    "ServerError",
    "StoreError",
    "StoreUnavailableError",
    "__version__",
    "acting_as",
    "erase",
    "errors",
    "events",
    "export_conversation",
    "import_lines",
    "open_store",
    "projections",
    "replay_conversation",
    "types",
    "verify_log",
]
