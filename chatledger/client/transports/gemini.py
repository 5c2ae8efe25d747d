"""The Gemini REST transport over httpx: ``generateContent`` and ``streamGenerateContent``.

The API key travels only in the ``x-goog-api-key`` header; it is never put in a URL, a
log line, an event or an error. ``http_options``: ``base_url`` (else the
``GOOGLE_GEMINI_BASE_URL`` environment variable, else Google's endpoint),
``api_version`` (default ``v1beta``), extra ``headers``, ``timeout`` in milliseconds and
``max_response_bytes``.

``timeout`` is, as google-genai documents it, the timeout of the request: the budget of
the whole request, from connecting to the last byte of the answer (every chunk of a
stream included), not of each network read. A request still running when it is spent
ends with :class:`~chatledger.errors.ModelTimeoutError` (retried like any timeout when
``retry_options`` are given; each attempt has the whole budget). Without a ``timeout``
a request may take as long as the server does (connecting is limited to 30 s). What
else every HTTP transport guarantees is in :mod:`.http`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from ...errors import APIError, InvalidInputError
from ._http import RequestBudget, decode_json_object
from .base import ModelRequest
from .http import HttpTransport, StreamDecoder, httpx_timeout

__all__ = ["DEFAULT_BASE_URL", "GeminiTransport", "check_model_name", "httpx_timeout"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
DEFAULT_API_VERSION = "v1beta"


def raise_error_body(body: dict[str, Any]) -> None:
    """Raise the APIError a 200 body or a stream event carries (``{"error": {...}}``)."""
    error = body.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        raise APIError.from_status(status, body)


def check_model_name(model: str) -> str:
    """``model``, if the Gemini API's URL can carry it (it becomes part of the path)."""
    if not model or any(bad in model for bad in ("..", "?", "&", "#")):
        raise InvalidInputError(
            f"invalid model name {model!r}: a Gemini model name cannot hold '..', '?', '&' "
            "or '#' (for example gemini-2.5-flash or models/gemini-2.5-flash)"
        )
    return model


class _GeminiStream(StreamDecoder):
    """Each event is one wire chunk (or the error the server ended the stream with)."""

    def feed(self, data: str) -> list[dict[str, Any]]:
        chunk = decode_json_object(data, f"a stream event from {self.budget.host}")
        raise_error_body(chunk)
        return [chunk]


class GeminiTransport(HttpTransport):
    """Google's Gemini API (or any server speaking its REST protocol)."""

    name = "gemini"
    endpoint_kind = "gemini"
    default_base_url = DEFAULT_BASE_URL
    base_url_env = "GOOGLE_GEMINI_BASE_URL"

    def setup(self) -> None:
        #: The base URL, ending in "/" (never with the credentials it may have held).
        self.base_url = self.endpoint.url + "/"
        env_version = os.environ.get("GOOGLE_GENAI_API_VERSION")
        if env_version == "beta":
            env_version = "v1beta"
        self.api_version = self._options.api_version or env_version or DEFAULT_API_VERSION

    def __repr__(self) -> str:
        return (
            f"GeminiTransport(base_url={self.endpoint.shown!r}, api_version={self.api_version!r})"
        )

    def url(self, model: str, method: str) -> str:
        """The URL of ``method`` (``generateContent`` ...) for ``model``."""
        check_model_name(model)
        path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        return f"{self.base_url}{self.api_version}/{quote(path, safe='/')}:{method}"

    # ----------------------------------------------------------------- the protocol

    def request_url(self, request: ModelRequest, *, stream: bool) -> str:
        if stream:
            return self.url(request.model, "streamGenerateContent") + "?alt=sse"
        return self.url(request.model, "generateContent")

    def request_body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        return request.body()

    def key_headers(self) -> dict[str, str]:
        if not self._api_key:
            raise InvalidInputError(
                "no API key for the Gemini API: pass Client(api_key=...) or set "
                "GEMINI_API_KEY (or GOOGLE_API_KEY); for an offline chat use model='local'"
            )
        return {"x-goog-api-key": self._api_key}

    def response_from_body(self, body: dict[str, Any]) -> dict[str, Any]:
        raise_error_body(body)
        return body

    def stream_decoder(self, budget: RequestBudget) -> StreamDecoder:
        return _GeminiStream(budget)
