"""The Gemini-shaped API over the log: Client, chats, and the model transports."""

from ._chat import AsyncChat, Chat
from ._client import AsyncChats, AsyncClient, Chats, ChatSummary, Client

__all__ = ["AsyncChat", "AsyncChats", "AsyncClient", "Chat", "ChatSummary", "Chats", "Client"]
