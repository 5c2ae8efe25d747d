"""The scripted transport keeps the transport contract too, and what it adds: replies in
order, errors after chunks, every request kept, a clear error when nothing is queued."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chatledger.client.transports.base import ModelRequest
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import InvalidInputError, ServerError
from tests.transport_contract import (
    EmptyStreamContract,
    Prepared,
    ScriptableHarness,
    TransportContract,
    response_text,
)


def request(text: str = "Say hello", **config: Any) -> ModelRequest:
    return ModelRequest(
        model="scripted", contents=[{"role": "user", "parts": [{"text": text}]}], config=config
    )


def usage(tokens: int) -> dict[str, int]:
    return {"promptTokenCount": 9, "candidatesTokenCount": tokens, "totalTokenCount": 9 + tokens}


class ScriptedHarness(ScriptableHarness):
    transport: ScriptedTransport

    def __init__(self) -> None:
        self.transport = ScriptedTransport()

    def prepare(self, *, stream: bool, max_output_tokens: int | None = None) -> Prepared:
        if max_output_tokens:
            pieces = ["Once", " upon", " a", " time", " there", " was"][:max_output_tokens]
        else:
            pieces = ["Hel", "lo, ", "world", "!"]
        finish = "MAX_TOKENS" if max_output_tokens else "STOP"
        if stream:
            chunks: list[str | dict[str, Any]] = [
                text_response(piece, finish_reason=None) for piece in pieces[:-1]
            ]
            chunks.append(text_response(pieces[-1], finish_reason=finish, usage=usage(len(pieces))))
            self.transport.enqueue(chunks=chunks)
        else:
            self.transport.enqueue(
                text_response("".join(pieces), finish_reason=finish, usage=usage(len(pieces)))
            )
        return Prepared(request(), pieces if stream else None)

    def script_empty_stream(self) -> ModelRequest:
        self.transport.enqueue(chunks=[])
        return request()


class TestScriptedContract(TransportContract, EmptyStreamContract):
    @pytest.fixture
    def harness(self) -> Iterator[ScriptedHarness]:
        yield ScriptedHarness()


def test_replies_come_in_order_and_every_request_is_kept() -> None:
    transport = ScriptedTransport().enqueue("one").enqueue(chunks=["t", "wo"])
    assert response_text(transport.generate(request("first"))) == "one"
    chunks = list(transport.stream(request("second")))
    assert [response_text(chunk) for chunk in chunks] == ["t", "wo"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert [r.contents[0]["parts"][0]["text"] for r in transport.requests] == ["first", "second"]
    assert transport.pending == 0


def test_an_error_comes_after_the_chunks_scripted_before_it() -> None:
    failure = ServerError(503, {"error": {"code": 503, "message": "gone", "status": "UNAVAILABLE"}})
    transport = ScriptedTransport().enqueue(chunks=["partial"], error=failure)
    received = []
    with pytest.raises(ServerError):
        for chunk in transport.stream(request()):
            received.append(response_text(chunk))
    assert received == ["partial"]


def test_a_request_with_nothing_queued_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="no reply queued"):
        ScriptedTransport().generate(request())
