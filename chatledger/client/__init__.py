"""The Gemini-shaped API over the log: Client, chats, and the model transports."""

from ._chat import AsyncChat, Chat
from ._client import AsyncChats, AsyncClient, BranchNode, Chats, ChatSummary, Client
from ._conversation import acting_as, current_actor, default_actor

__all__ = [
    "AsyncChat",
    "AsyncChats",
    "AsyncClient",
    "BranchNode",
    "Chat",
    "ChatSummary",
    "Chats",
    "Client",
    "acting_as",
    "current_actor",
    "default_actor",
]
