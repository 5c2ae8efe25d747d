"""The Gemini REST transport: the contract against a scripted loopback server, then what is
particular to it: URLs, the key header, base URLs (with credentials, from the
environment, refused), and what one HTTP base gives both HTTP transports."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import chatledger
from chatledger.client.transports.base import ModelRequest
from chatledger.client.transports.gemini import GeminiTransport
from chatledger.errors import InvalidInputError, ModelConnectionError
from chatledger.types import HttpOptions
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, text_response
from tests.transport_contract import HttpContract, HttpHarness, TransportContract

MODEL = "gemini-2.0-flash"


class GeminiHarness(HttpHarness):
    def __init__(self, server: GeminiServer) -> None:
        super().__init__(server, GeminiTransport, server.base_url)

    def request(self, max_output_tokens: int | None = None) -> ModelRequest:
        config = {"generationConfig": {"maxOutputTokens": max_output_tokens}}
        return ModelRequest(
            model=MODEL,
            contents=[{"role": "user", "parts": [{"text": "Say hello"}]}],
            config=config if max_output_tokens else {},
        )

    def body(self, text: str, *, max_tokens: bool = False, tokens: int = 1) -> dict[str, Any]:
        usage = {
            "promptTokenCount": 9,
            "candidatesTokenCount": tokens,
            "totalTokenCount": 9 + tokens,
        }
        return text_response(
            text, finish_reason="MAX_TOKENS" if max_tokens else "STOP", usage=usage
        )

    def events(
        self, pieces: list[str], *, max_tokens: bool = False, finish: bool = True
    ) -> list[Any]:
        chunks: list[Any] = [text_response(piece, finish_reason=None) for piece in pieces]
        if finish:
            chunks[-1] = self.body(pieces[-1], max_tokens=max_tokens, tokens=len(pieces))
        return chunks

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": "SCRIPTED"}}


class TestGeminiContract(TransportContract, HttpContract):
    @pytest.fixture
    def harness(self, gemini_server: GeminiServer) -> Iterator[GeminiHarness]:
        harness = GeminiHarness(gemini_server)
        yield harness
        harness.transport.close()


def request(text: str = "Hi") -> ModelRequest:
    return ModelRequest(model=MODEL, contents=[{"role": "user", "parts": [{"text": text}]}])


# --------------------------------------------------------------------------- requests


def test_requests_go_to_the_model_url_with_the_key_in_a_header(
    gemini_server: GeminiServer,
) -> None:
    transport = GeminiTransport(API_KEY, HttpOptions(base_url=gemini_server.base_url))
    gemini_server.reply_text("one")
    gemini_server.reply_sse([text_response("two")])
    transport.generate(request())
    list(transport.stream(request()))
    plain, streamed = gemini_server.requests
    assert plain.path == f"/v1beta/models/{MODEL}:generateContent" and plain.query == {}
    assert streamed.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert streamed.query == {"alt": ["sse"]}
    for sent in (plain, streamed):
        assert sent.headers["x-goog-api-key"] == API_KEY
        assert "authorization" not in sent.headers
    assert plain.headers["accept"] == "application/json"
    assert streamed.headers["accept"] == "text/event-stream"
    transport.close()


def test_without_a_key_nothing_is_sent(gemini_server: GeminiServer) -> None:
    transport = GeminiTransport(None, HttpOptions(base_url=gemini_server.base_url))
    with pytest.raises(InvalidInputError, match="no API key"):
        transport.generate(request())
    assert gemini_server.requests == []


def test_the_api_version_and_the_base_url_come_from_options_or_the_environment(
    gemini_server: GeminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_server.base_url + "/proxy/")
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")
    transport = GeminiTransport(API_KEY)
    assert transport.base_url == gemini_server.base_url + "/proxy/"
    gemini_server.reply_text("ok")
    transport.generate(request())
    assert gemini_server.requests[-1].path == f"/proxy/v1/models/{MODEL}:generateContent"
    explicit = GeminiTransport(
        API_KEY, HttpOptions(base_url="https://example.test", api_version="v9")
    )
    assert explicit.url(MODEL, "generateContent") == (
        f"https://example.test/v9/models/{MODEL}:generateContent"
    )
    transport.close()


# --------------------------------------------------------------------------- base URLs


PASSWORD = "url-PASSWORD-3e4f5a6b"


@pytest.mark.parametrize("variable", [None, "GOOGLE_GEMINI_BASE_URL"])
def test_credentials_in_the_base_url_become_a_header_and_are_never_shown(
    gemini_server: GeminiServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str | None,
) -> None:
    """Issue 13, item 6: ``http://user:PASSWORD@host/`` printed the password in the error
    (and so in ``model_call_failed`` and exports). The credentials go as a Basic
    Authorization header; the URL requested, the log lines, the reprs and the errors
    name only ``host:port``."""
    caplog.set_level(logging.DEBUG)
    host = gemini_server.base_url.removeprefix("http://")
    url = f"http://alice:{PASSWORD}@{host}/"
    if variable:
        monkeypatch.setenv(variable, url)
        transport = GeminiTransport(API_KEY)
    else:
        transport = GeminiTransport(API_KEY, HttpOptions(base_url=url))
    gemini_server.reply_text("fine")
    transport.generate(request())
    sent = gemini_server.requests[-1]
    assert sent.headers["authorization"] == "Basic " + _b64(f"alice:{PASSWORD}")
    assert transport.host == host
    gemini_server.reply_error(503, "UNAVAILABLE", "busy")
    with pytest.raises(chatledger.ServerError) as caught:
        transport.generate(request())
    gemini_server.stop()
    transport.close()  # no pooled connection to the stopped server either
    with pytest.raises(ModelConnectionError) as unreachable:
        transport.generate(request())
    shown = [
        repr(transport),
        str(caught.value),
        repr(caught.value.response),
        str(unreachable.value),
        caplog.text,
    ]
    assert f"cannot reach {host}" in str(unreachable.value)
    assert "alice:***@" in repr(transport)
    for text in shown:
        assert PASSWORD not in text, text
        assert _b64(f"alice:{PASSWORD}") not in text, text
    transport.close()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:8000", "must start with http:// or https://"),
        ("ftp://host/", "must start with http:// or https://"),
        ("http://", "names no host"),
        ("http://host:99999/", "out of range"),
        ("http://host/?key=abc", "cannot hold a query"),
        ("http://host/#frag", "cannot hold a query"),
        ("http://ho st/", "space or a control character"),
        (f"http://bob:{PASSWORD}@host:notaport/", "Port could not be cast"),
    ],
)
def test_a_base_url_that_cannot_work_is_refused_at_once(url: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem) as caught:
        GeminiTransport(API_KEY, HttpOptions(base_url=url))
    assert PASSWORD not in str(caught.value)


def test_http_options_repr_hides_the_password_of_the_base_url() -> None:
    options = HttpOptions(base_url=f"https://bob:{PASSWORD}@proxy.example/v1")
    assert PASSWORD not in repr(options) and PASSWORD not in str(options)
    assert "bob:***@proxy.example/v1" in repr(options)


def test_a_caller_client_that_follows_redirects_is_not_followed(
    gemini_server: GeminiServer,
) -> None:
    """httpx keeps x-goog-api-key across a redirect to another host (it strips only
    Authorization): a redirect must never be followed, even by an ``http_client`` set
    to follow them. The other server never hears from us."""
    with GeminiServer() as elsewhere:
        elsewhere.reply_text("you should not be here")
        gemini_server.reply_raw(
            b"", status=302, headers={"Location": elsewhere.base_url + "/steal"}
        )
        client = httpx.Client(follow_redirects=True)
        transport = GeminiTransport(
            API_KEY, HttpOptions(base_url=gemini_server.base_url), http_client=client
        )
        with pytest.raises(chatledger.APIError, match="does not follow redirects"):
            transport.generate(request())
        assert elsewhere.requests == []
        client.close()
