"""The OpenAI-compatible transport over httpx: ``POST {base_url}/chat/completions``.

Any server of the OpenAI chat completions protocol will do: vLLM, llama.cpp's server
(``python -m llama_cpp.server``), Ollama, OpenAI itself. Requests and responses are
translated at this boundary (:mod:`._openai_translate` says what the translation loses),
so the rest of chatledger still speaks only the Gemini wire form. ``http_options``:
``base_url`` (for example ``http://127.0.0.1:8000/v1``; else the ``OPENAI_BASE_URL``
environment variable, else OpenAI's endpoint), extra ``headers``, ``timeout`` in
milliseconds (the budget of each whole request, streams included) and
``max_response_bytes``, as for every HTTP transport (:mod:`.http`). The API key, when
there is one, travels only in the ``Authorization: Bearer`` header and is registered as
a secret, so no error shows it.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ...errors import APIError
from ._http import RequestBudget, decode_json_object, response_info
from ._openai_translate import (
    DONE,
    StreamTranslator,
    chat_messages,
    chat_request,
    error_body,
    json_schema_from_gemini,
    response_from_openai,
)
from .base import ModelRequest
from .http import HttpTransport, StreamDecoder

__all__ = [
    "DEFAULT_BASE_URL",
    "OpenAITransport",
    "chat_messages",
    "chat_request",
    "json_schema_from_gemini",
    "response_from_openai",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _OpenAIStream(StreamDecoder):
    """``chat.completion.chunk`` events through a :class:`StreamTranslator`, to ``[DONE]``."""

    def __init__(self, budget: RequestBudget) -> None:
        super().__init__(budget)
        self._translator = StreamTranslator()

    def feed(self, data: str) -> list[dict[str, Any]]:
        if data.strip() == DONE:
            self.done = self._translator.done = True
            return []
        event = decode_json_object(data, f"a stream event from {self.budget.host}")
        return self._translator.feed(event)

    def finish(self) -> list[dict[str, Any]]:
        if not self.events:
            raise self.no_answer()
        return self._translator.finish()


class OpenAITransport(HttpTransport):
    """A server of the OpenAI chat completions protocol, sync and async."""

    name = "openai"
    default_base_url = DEFAULT_BASE_URL
    base_url_env = "OPENAI_BASE_URL"

    def setup(self) -> None:
        #: The base URL, without a trailing "/" (nor the credentials it may have held).
        self.base_url = self.endpoint.url

    @property
    def url(self) -> str:
        """Where every request goes."""
        return f"{self.base_url}/chat/completions"

    # ----------------------------------------------------------------- the protocol

    def request_url(self, request: ModelRequest, *, stream: bool) -> str:
        return self.url

    def request_body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        return chat_request(request, stream=stream)

    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def response_from_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return response_from_openai(body)

    def stream_decoder(self, budget: RequestBudget) -> StreamDecoder:
        return _OpenAIStream(budget)

    def error_from_response(self, response: httpx.Response, content: bytes) -> APIError:
        """Any error body (OpenAI's, vLLM's, Ollama's, FastAPI's, HTML) in Gemini's shape."""
        text = content.decode("utf-8", "replace")
        try:
            payload: Any = msgspec.json.decode(content)
        except (msgspec.DecodeError, RecursionError):
            payload = None
        body = error_body(response.status_code, payload, text, response.reason_phrase)
        return APIError.from_status(response.status_code, body, response_info(response, text))
