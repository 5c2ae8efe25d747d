"""What the legacy tests share: clients on the loopback Gemini server, google.generativeai
0.8.6 pointed at the same server, and the helpers that compare the two.

google-generativeai 0.8.6's sync client can be pointed at a loopback REST server:
``genai.configure(api_key=..., transport="rest", client_options={"api_endpoint":
"http://127.0.0.1:PORT"})`` (the scheme in the endpoint is honoured; requests go to
``/v1beta/models/...:generateContent`` with ``$alt=json;enum-encoding=int``). Its
streaming over REST reads a JSON array (not server-sent events), so the server is given
the same chunks in that framing (:func:`stream_reply`).
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.legacy import ChatSession
from tests.support.gemini_server import GeminiServer, text_response

with warnings.catch_warnings():
    # google.generativeai announces its end of support (FutureWarning) on import, and
    # google.api_core its Python version policy.
    warnings.simplefilter("ignore", FutureWarning)
    gg: Any = importlib.import_module("google.generativeai")
    gg_generation_types: Any = importlib.import_module("google.generativeai.types.generation_types")

API_KEY = "test-api-key-DO-NOT-LEAK-4f9a8b7c"
MODEL = "gemini-test"
WAIT = 10.0  # a bound on waiting for another thread (never a duration assertion)


@pytest.fixture
def ledger(gemini_server: GeminiServer, db_path: Path) -> Iterator[chatledger.Client]:
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(db_path),
    ) as client:
        yield client


@pytest.fixture
async def aledger(gemini_server: GeminiServer, db_path: Path) -> AsyncIterator[chatledger.Client]:
    """As ``ledger``, closed with ``aclose`` (its async HTTP connections too)."""
    client = chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": gemini_server.base_url},
        store=str(db_path),
    )
    yield client
    await client.aclose()


@pytest.fixture
def gg_configured(gemini_server: GeminiServer) -> None:
    """google.generativeai 0.8.6 (global configuration) pointed at the loopback server."""
    gg.configure(
        api_key=API_KEY,
        transport="rest",
        client_options={"api_endpoint": gemini_server.base_url},
    )


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text} for text in texts]}


def model(*texts: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text} for text in texts]}


def wire(contents: list[Any]) -> list[dict[str, Any]]:
    return [content.to_wire() for content in contents]


def types_of(session: ChatSession) -> list[str]:
    return [event.type for event in session.chat.events()]


def chunk(text: str, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return text_response(text, finish_reason=finish_reason, **extra)


USAGE = {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}
STREAM_CHUNKS = [chunk("Once "), chunk("upon "), chunk("a time.", "STOP", usage=USAGE)]
MERGED = text_response("Once upon a time.", usage=USAGE)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def proto_dict(content: Any) -> dict[str, Any]:
    """A google.generativeai (proto-plus) content as a dict, unset fields left out."""
    to_dict: Any = type(content).to_dict
    result: dict[str, Any] = to_dict(content, always_print_fields_with_no_presence=False)
    return result


def ledger_dict(content: Any) -> dict[str, Any]:
    result: dict[str, Any] = content.model_dump(mode="json", exclude_none=True)
    return result


def gg_history(chat: Any) -> list[dict[str, Any]]:
    return [proto_dict(c) for c in chat.history]


def ledger_history(session: ChatSession) -> list[dict[str, Any]]:
    return [ledger_dict(c) for c in session.history]


def contents_sent(server: GeminiServer, start: int = 0) -> list[list[dict[str, Any]]]:
    """The contents of each request since ``start``, keys in one order (camelCase)."""
    return [
        json.loads(json.dumps(request.body["contents"], sort_keys=True))
        for request in server.requests[start:]
    ]


def stream_reply(server: GeminiServer, chunks: list[dict[str, Any]], *, library: str) -> None:
    """The same chunks in each library's streaming framing: a JSON array for
    google.generativeai's REST transport, server-sent events for chatledger."""
    if library == "gg":
        server.reply_raw(json.dumps(chunks).encode(), content_type="application/json")
    else:
        server.reply_sse(chunks)
