"""The Gemini-shaped API over the log: Client, chats, and the model transports."""

from ._chat import AsyncChat, Chat
from ._client import AsyncChats, AsyncClient, Chats, Client
from ._fold import verify_log
from ._replay import (
    Difference,
    RecordedCall,
    ReplayReport,
    ReplayTransport,
    recorded_calls,
    replay_conversation,
)
from ._settings import ConversationSettings, acting_as, current_actor, default_actor
from ._summaries import BranchNode, ChatSummary

__all__ = [
    "AsyncChat",
    "AsyncChats",
    "AsyncClient",
    "BranchNode",
    "Chat",
    "ChatSummary",
    "Chats",
    "Client",
    "ConversationSettings",
    "Difference",
    "RecordedCall",
    "ReplayReport",
    "ReplayTransport",
    "acting_as",
    "current_actor",
    "default_actor",
    "recorded_calls",
    "replay_conversation",
    "verify_log",
]
