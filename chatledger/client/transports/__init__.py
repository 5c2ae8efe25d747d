"""Model transports: a request in, a response or a stream of chunks out."""

from .base import ModelRequest, Transport
from .gemini import GeminiTransport
from .scripted import ScriptedTransport

__all__ = ["GeminiTransport", "ModelRequest", "ScriptedTransport", "Transport"]
