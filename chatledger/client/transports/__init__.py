"""Model transports: a request in, a response or a stream of chunks out."""

from .base import ModelRequest, Transport
from .gemini import GeminiTransport
from .http import HttpTransport
from .local import LocalTransport
from .openai import OpenAITransport
from .scripted import ScriptedTransport
from .vertex import VertexTransport

__all__ = [
    "GeminiTransport",
    "HttpTransport",
    "LocalTransport",
    "ModelRequest",
    "OpenAITransport",
    "ScriptedTransport",
    "Transport",
    "VertexTransport",
]
