"""A real HTTP server on loopback that speaks the Gemini REST protocol with scripted replies.

It stands in for Google's service only: chatledger and google-genai are both pointed at
it in the same tests, and every request either makes is recorded for comparison.

    with GeminiServer() as server:
        server.reply_text("Hello")                          # generateContent
        server.reply_sse([chunk1, chunk2])                  # streamGenerateContent
        server.reply_error(429, "RESOURCE_EXHAUSTED", "slow down")
        client = chatledger.Client(api_key="k", http_options={"base_url": server.base_url})
        ...
        server.requests[0].body["contents"]

The scripting API (``enqueue``, ``reply_json``, ``reply_raw``, ``reply_sse``, ``clear``,
``pending``, ``requests``) is :class:`~tests.support.scripted_server.ScriptedServer`'s.
"""

from __future__ import annotations

from typing import Any

from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

__all__ = ["GeminiServer", "RecordedRequest", "Reply", "text_response"]


def text_response(
    text: str | None = None,
    *,
    finish_reason: str | None = "STOP",
    usage: dict[str, int] | None = None,
    parts: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A wire GenerateContentResponse with one candidate."""
    candidate: dict[str, Any] = {}
    if parts is not None or text is not None:
        candidate["content"] = {
            "role": "model",
            "parts": parts if parts is not None else [{"text": text}],
        }
    if finish_reason:
        candidate["finishReason"] = finish_reason
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    body.update(extra)
    return body


def _last_user_text(body: Any) -> str:
    for content in reversed((body or {}).get("contents") or []):
        if content.get("role") == "user":
            return "".join(part.get("text", "") for part in content.get("parts") or [])
    return ""


class GeminiServer(ScriptedServer):
    """Scripted Gemini-protocol server on 127.0.0.1 (an ephemeral port)."""

    @property
    def base_url(self) -> str:
        """The URL a client is given: ``http://127.0.0.1:<port>``."""
        return self.address

    def unscripted(self) -> tuple[int, Any]:
        return 500, {"error": {"code": 500, "message": "no reply scripted", "status": "INTERNAL"}}

    def echo(self, request: RecordedRequest) -> Any:
        return text_response(f"echo: {_last_user_text(request.body)}")

    def reply_text(self, text: str, **kwargs: Any) -> GeminiServer:
        """A ``generateContent`` answer saying ``text`` (``text_response``'s options)."""
        return self.reply_json(text_response(text, **kwargs))

    def reply_error(self, code: int, status: str, message: str) -> GeminiServer:
        """An error as the Gemini API sends it: ``{"error": {"code", "message", "status"}}``."""
        return self.reply_json(
            {"error": {"code": code, "message": message, "status": status}}, status=code
        )

    def reply_echo(self, count: int = 1, delay: float = 0.0) -> GeminiServer:
        """Answer ``count`` requests with "echo: <the last user text>"."""
        for _ in range(count):
            self.enqueue(Reply("echo", delay=delay))
        return self
