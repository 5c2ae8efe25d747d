# The ports read fields chatledger's types do not have yet (continuation_token, parsed,
# initial_prompt_token_count), on optional values, as upstream does.
# mypy: disable-error-code="attr-defined,index,union-attr"
"""google-genai 3.3.0 ``tests/chats/test_continuation_token.py``, ported.

Automatic continuation: when a response ends with ``finish_reason == CONTINUATION`` and
a ``continuation_token``, google-genai's chats send the same contents again with the
token in the config until the finish reason is something else, and return (or stream)
the merged result. chatledger does the same (docs/chat-api.md#continuation). Three
ports count one history content per streamed chunk, which the log does not keep (a
streamed reply is one model turn): they are expected to fail, strictly.

The mocked ``Models._generate_content`` / ``_generate_content_stream`` become replies
queued on the scripted transport (one reply per hop); the ``config`` each hop was sent
with is the request it recorded. A token travels as base64 in the wire form, as every
bytes field does; :func:`sent_token` reads it back, wherever the request carries it.
``httpx.ReadTimeout`` raised by a mocked model is the error chatledger's transports
raise for it, :class:`~chatledger.errors.ModelTimeoutError`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

import chatledger
from chatledger import types
from chatledger.client.transports import ScriptedTransport
from chatledger.client.transports.base import ModelRequest
from chatledger.errors import ModelTimeoutError, ServerError

STREAM_ONE_TURN = (
    "a streamed reply is one model turn in the log, google-genai keeps one content per chunk "
    "(docs/differences.md#stream-one-turn)"
)


# --------------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def usage(**counts: Any) -> dict[str, Any]:
    """usage_metadata from snake_case keyword arguments, in wire form."""
    return types.GenerateContentResponseUsageMetadata(**counts).to_wire()


def hop(
    parts: list[dict[str, Any]] | str | None,
    *,
    finish_reason: str | None = None,
    token: bytes | None = None,
    role: str | None = "model",
    **extra: Any,
) -> dict[str, Any]:
    """A wire response (or chunk) whose one candidate has ``parts`` (text, or part
    dicts), a finish reason and a continuation token; ``extra`` are response fields."""
    candidate: dict[str, Any] = {}
    if parts is not None:
        content: dict[str, Any] = {"parts": [{"text": parts}] if isinstance(parts, str) else parts}
        if role is not None:
            content["role"] = role
        candidate["content"] = content
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    if token is not None:
        candidate["continuationToken"] = b64(token)
    return {"candidates": [candidate], **extra}


def thought(text: str, signature: bytes) -> dict[str, Any]:
    return {"text": text, "thoughtSignature": b64(signature)}


def _find(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for child in value.values():
            found = _find(child, key)
            if found is not None:
                return found
    return None


def sent_token(request: ModelRequest) -> bytes | None:
    """The continuation token a request was sent with (None without one)."""
    token = _find(request.config, "continuationToken")
    return base64.urlsafe_b64decode(token) if isinstance(token, str) else token


def sent_config(request: ModelRequest, key: str) -> Any:
    """A generation config field of a request (camelCase), or None."""
    return _find(request.config, key)


def texts(chunks: list[types.GenerateContentResponse]) -> list[str | None]:
    return [chunk.text for chunk in chunks]


def finish_reasons(chunks: list[types.GenerateContentResponse]) -> list[Any]:
    return [chunk.candidates[0].finish_reason for chunk in chunks if chunk.candidates]


def afc_off() -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )


async def collect(stream: Any) -> list[types.GenerateContentResponse]:
    return [chunk async for chunk in stream]


# --------------------------------------------------------------------------- tests


def test_continuation_helpers_edge_cases(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Upstream tests its private helpers (should_continue_generation,
    prepare_continuation_config, merge_continuation_responses, merge_candidates); here
    their edge cases go through a chat: a response without candidates does not
    continue, a one-hop merge is the response itself, and token details of an empty
    first hop are taken from the next."""
    scripted.enqueue({"candidates": []})
    chat = ledger.chats.create(model="gemini-2.5-pro")
    response = chat.send_message("Hi")
    assert len(scripted.requests) == 1
    assert response == types.GenerateContentResponse(candidates=[])

    scripted.enqueue(
        hop(
            "hi",
            finish_reason="CONTINUATION",
            token=b"tok",
            usageMetadata=usage(prompt_tokens_details=[]),
        )
    )
    scripted.enqueue(
        hop(
            "",
            finish_reason="STOP",
            usageMetadata=usage(prompt_tokens_details=[{"modality": "TEXT", "token_count": 10}]),
        )
    )
    chat = ledger.chats.create(model="gemini-2.5-pro", config={"temperature": 0.5})
    merged = chat.send_message("Hi")
    assert sent_token(scripted.requests[-1]) == b"tok"
    assert sent_config(scripted.requests[-1], "temperature") == 0.5
    assert merged.usage_metadata is not None
    assert merged.usage_metadata.prompt_tokens_details == [{"modality": "TEXT", "tokenCount": 10}]


def test_chat_send_message_default_auto_resumes_on_max_tokens(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Default Chat config auto-resumes across 4 hops on CONTINUATION + continuation_token."""
    chat = ledger.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(
        hop(
            "Hop 1 part. ",
            finish_reason="CONTINUATION",
            token=b"token_hop_1",
            usageMetadata=usage(
                prompt_token_count=10,
                candidates_token_count=32768,
                thoughts_token_count=500,
                total_token_count=33278,
            ),
        )
    )
    scripted.enqueue(
        hop(
            "Hop 2 part. ",
            finish_reason="CONTINUATION",
            token=b"token_hop_2",
            usageMetadata=usage(
                prompt_token_count=32778,
                candidates_token_count=32768,
                thoughts_token_count=300,
                total_token_count=65846,
            ),
        )
    )
    scripted.enqueue(
        hop(
            "Hop 3 part. ",
            finish_reason="CONTINUATION",
            token=b"token_hop_3",
            usageMetadata=usage(
                prompt_token_count=65546,
                candidates_token_count=32768,
                thoughts_token_count=200,
                total_token_count=98514,
            ),
        )
    )
    scripted.enqueue(
        hop(
            "Hop 4 final part.",
            finish_reason="STOP",
            usageMetadata=usage(
                prompt_token_count=98314,
                candidates_token_count=1024,
                thoughts_token_count=100,
                total_token_count=99438,
            ),
        )
    )

    response = chat.send_message("Write a very long story")

    assert len(scripted.requests) == 4
    expected_tokens = [None, b"token_hop_1", b"token_hop_2", b"token_hop_3"]
    first_contents = scripted.requests[0].contents
    assert len(first_contents) == 1
    for request, expected_tok in zip(scripted.requests, expected_tokens, strict=True):
        assert sent_token(request) == expected_tok
        assert request.contents == first_contents

    assert response.text == "Hop 1 part. Hop 2 part. Hop 3 part. Hop 4 final part."
    assert response.candidates is not None
    cand = response.candidates[0]
    assert cand.finish_reason == types.FinishReason.STOP
    assert cand.continuation_token is None
    assert cand.content is not None
    assert cand.content.parts == [
        types.Part(text="Hop 1 part. "),
        types.Part(text="Hop 2 part. "),
        types.Part(text="Hop 3 part. "),
        types.Part(text="Hop 4 final part."),
    ]
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 10 + 32778 + 65546 + 98314
    assert response.initial_prompt_token_count == 10
    assert response.usage_metadata.initial_prompt_token_count == 10
    assert response.usage_metadata.candidates_token_count == 32768 * 3 + 1024
    assert response.usage_metadata.thoughts_token_count == 500 + 300 + 200 + 100
    assert response.usage_metadata.total_token_count == 33278 + 65846 + 98514 + 99438

    assert chat.config is None or getattr(chat.config, "continuation_token", None) is None
    history = chat.get_history(curated=True)
    assert len(history) == 2
    assert history[0].role == "user"
    assert history[1].role == "model"
    assert history[1].parts == [
        types.Part(text="Hop 1 part. "),
        types.Part(text="Hop 2 part. "),
        types.Part(text="Hop 3 part. "),
        types.Part(text="Hop 4 final part."),
    ]


def test_chat_send_message_explicit_max_output_tokens_stops_on_max_tokens(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """When user explicitly sets max_output_tokens, sync unary and stream do not
    auto-resume on MAX_TOKENS."""
    chat = ledger.chats.create(
        model="gemini-2.5-pro", config=types.GenerateContentConfig(max_output_tokens=1000)
    )
    hop1_response = hop(
        "Stopped at 1000 tokens.", finish_reason="MAX_TOKENS", token=b"token_unused"
    )

    # 1. Sync unary (AFC enabled by default, max_output_tokens on chat config)
    scripted.enqueue(hop1_response)
    response = chat.send_message("Short response please")
    assert len(scripted.requests) == 1
    assert response.text == "Stopped at 1000 tokens."
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.candidates[0].continuation_token == b"token_unused"

    # 2. Sync unary (AFC disabled, max_output_tokens on method config)
    chat_no_cfg = ledger.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(hop1_response)
    response = chat_no_cfg.send_message(
        "Short response please",
        config=types.GenerateContentConfig(
            max_output_tokens=1000,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    assert len(scripted.requests) == 2
    assert response.text == "Stopped at 1000 tokens."
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.candidates[0].continuation_token == b"token_unused"

    stream_chunks: list[Any] = [
        hop("Stream chunk 1. ", token=b"stream_token_unused"),
        hop("Stopped stream at 1000 tokens.", finish_reason="MAX_TOKENS"),
    ]
    # 3. Sync stream (AFC enabled by default, max_output_tokens on chat config)
    scripted.enqueue(chunks=list(stream_chunks))
    chunks = list(chat.send_message_stream("Short stream please"))
    assert len(scripted.requests) == 3
    assert texts(chunks) == ["Stream chunk 1. ", "Stopped stream at 1000 tokens."]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS

    # 4. Sync stream (AFC disabled, max_output_tokens on method config)
    scripted.enqueue(chunks=list(stream_chunks))
    chunks = list(
        chat_no_cfg.send_message_stream(
            "Short stream please",
            config=types.GenerateContentConfig(
                max_output_tokens=1000,
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            ),
        )
    )
    assert len(scripted.requests) == 4
    assert texts(chunks) == ["Stream chunk 1. ", "Stopped stream at 1000 tokens."]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def _two_hops(scripted: ScriptedTransport, first: str, second: str, token: bytes) -> None:
    scripted.enqueue(hop(first, finish_reason="CONTINUATION", token=token))
    scripted.enqueue(hop(second, finish_reason="STOP"))


def test_chat_automatic_continuation_config_rules(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Verifies rules for automatic_continuation and max_output_tokens pass-through in Chat."""
    # Rule 1: automatic_continuation unset, max_output_tokens unset -> enabled
    chat = ledger.chats.create(model="gemini-2.5-pro")
    _two_hops(scripted, "Hop 1. ", "Hop 2.", b"tok_1")
    response = chat.send_message("Rule 1")
    assert len(scripted.requests) == 2
    assert response.text == "Hop 1. Hop 2."

    # Rule 2: max_output_tokens is set -> forwarded as-is; enabled when
    # automatic_continuation is None or True
    for auto_cont in (None, True):
        chat = ledger.chats.create(model="gemini-2.5-pro")
        start = len(scripted.requests)
        _two_hops(scripted, "Hop 1. ", "Hop 2.", b"tok_1")
        response = chat.send_message(
            "Rule 2 enabled",
            config={
                "max_output_tokens": 50000,
                "automatic_continuation": auto_cont,
                "automatic_function_calling": {"disable": True},
            },
        )
        sent = scripted.requests[start:]
        assert len(sent) == 2
        assert response.text == "Hop 1. Hop 2."
        assert sent_config(sent[0], "maxOutputTokens") == 50000
        assert sent_config(sent[1], "maxOutputTokens") == 50000

    chat = ledger.chats.create(model="gemini-2.5-pro")
    start = len(scripted.requests)
    scripted.enqueue(hop("Hop 1. ", finish_reason="CONTINUATION", token=b"tok_1"))
    response = chat.send_message(
        "Rule 2 disabled",
        config={
            "max_output_tokens": 50000,
            "automatic_continuation": False,
            "automatic_function_calling": {"disable": True},
        },
    )
    assert len(scripted.requests) - start == 1
    assert response.text == "Hop 1. "
    assert response.candidates[0].finish_reason == "CONTINUATION"
    assert response.candidates[0].continuation_token == b"tok_1"

    # Rule 3: automatic_continuation=True, max_output_tokens unset -> enabled
    chat = ledger.chats.create(model="gemini-2.5-pro")
    start = len(scripted.requests)
    _two_hops(scripted, "Hop 1. ", "Hop 2.", b"tok_1")
    response = chat.send_message(
        "Rule 3", config=types.GenerateContentConfig(automatic_continuation=True)
    )
    assert len(scripted.requests) - start == 2
    assert response.text == "Hop 1. Hop 2."

    # Rule 4: automatic_continuation=False, max_output_tokens unset -> disabled
    chat = ledger.chats.create(model="gemini-2.5-pro")
    start = len(scripted.requests)
    scripted.enqueue(hop("Hop 1. ", finish_reason="CONTINUATION", token=b"tok_1"))
    response = chat.send_message(
        "Rule 4", config=types.GenerateContentConfig(automatic_continuation=False)
    )
    assert len(scripted.requests) - start == 1
    assert response.text == "Hop 1. "
    assert response.candidates[0].continuation_token == b"tok_1"

    # Rule 4 in streaming
    start = len(scripted.requests)
    scripted.enqueue(chunks=[hop("Hop 1. ", finish_reason="CONTINUATION", token=b"tok_1")])
    chunks = list(
        chat.send_message_stream(
            "Rule 4 stream", config=types.GenerateContentConfig(automatic_continuation=False)
        )
    )
    assert len(scripted.requests) - start == 1
    assert texts(chunks) == ["Hop 1. "]
    assert chunks[0].candidates[0].finish_reason == "CONTINUATION"


def test_chat_send_message_incompatible_tools_with_continuation(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Incompatible AFC tools path also supports continuation token resumption."""
    chat = ledger.chats.create(model="gemini-2.5-pro")
    _two_hops(scripted, "Part 1. ", "Part 2.", b"tok_incompat")
    tool_decl = types.Tool(
        function_declarations=[types.FunctionDeclaration(name="manual_fn", description="manual")]
    )
    resp = chat.send_message(
        "Test incompatible tools", config=types.GenerateContentConfig(tools=[tool_decl])
    )
    assert len(scripted.requests) == 2
    assert resp.text == "Part 1. Part 2."


def test_chat_send_message_preserves_empty_text_thought_part(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Empty placeholder Part(text='') from a thought-only hop is never dropped."""
    chat = ledger.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(
        hop(
            [thought("", b"sig_hop_1")],
            finish_reason="CONTINUATION",
            token=b"tok_after_thought",
        )
    )
    scripted.enqueue(hop("Final answer after deep thinking.", finish_reason="STOP"))

    response = chat.send_message("Solve hard math problem")
    assert len(scripted.requests) == 2
    assert response.text == "Final answer after deep thinking."
    parts: Any = response.candidates[0].content.parts
    assert len(parts) == 2
    assert parts[0].text == ""
    assert parts[0].thought_signature == b"sig_hop_1"
    assert parts[1].text == "Final answer after deep thinking."
    assert len(chat.get_history(curated=True)) == 2


def test_chat_send_message_recursive_metadata_and_parsed_schema_merging(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Verifies recursive Pydantic merging for all metadata fields and response_schema."""

    class StorySummary(pydantic.BaseModel):
        title: str
        pages: int

    chat = ledger.chats.create(model="gemini-2.5-pro")
    hop1 = hop(
        '{"title": "Long ',
        finish_reason="CONTINUATION",
        token=b"tok_meta_1",
        usageMetadata=usage(
            prompt_token_count=20,
            cached_content_token_count=8,
            candidates_token_count=100,
            total_token_count=120,
            prompt_tokens_details=[{"modality": "TEXT", "tokenCount": 20}],
            candidates_tokens_details=[{"modality": "TEXT", "tokenCount": 100}],
        ),
    )
    hop1["candidates"][0].update(
        safetyRatings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}],
        citationMetadata={"citations": [{"title": "Source 1", "startIndex": 0}]},
        groundingMetadata={"webSearchQueries": ["query 1"]},
        logprobsResult={
            "logProbabilitySum": -1.5,
            "chosenCandidates": [{"token": '{"title":', "logProbability": -1.5}],
        },
    )
    hop2 = hop(
        'Odyssey", "pages": 42}',
        finish_reason="STOP",
        usageMetadata=usage(
            prompt_token_count=120,
            cached_content_token_count=8,
            candidates_token_count=50,
            total_token_count=170,
            prompt_tokens_details=[{"modality": "TEXT", "tokenCount": 120}],
            candidates_tokens_details=[{"modality": "TEXT", "tokenCount": 50}],
        ),
    )
    hop2["candidates"][0].update(
        safetyRatings=[
            {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "LOW"},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ],
        citationMetadata={"citations": [{"title": "Source 2", "startIndex": 10}]},
        groundingMetadata={"webSearchQueries": ["query 2"]},
        logprobsResult={
            "logProbabilitySum": -2.0,
            "chosenCandidates": [{"token": 'Odyssey"}', "logProbability": -2.0}],
        },
    )
    scripted.enqueue(hop1).enqueue(hop2)

    response = chat.send_message(
        "Give me JSON", config=types.GenerateContentConfig(response_schema=StorySummary)
    )

    assert response.text == '{"title": "Long Odyssey", "pages": 42}'
    assert response.parsed == StorySummary(title="Long Odyssey", pages=42)
    cand: Any = response.candidates[0]
    assert len(cand.safety_ratings) == 2
    assert cand.safety_ratings[0].probability == types.HarmProbability.LOW
    assert len(cand.citation_metadata["citations"]) == 2
    assert cand.grounding_metadata["webSearchQueries"] == ["query 1", "query 2"]
    assert cand.logprobs_result["logProbabilitySum"] == -3.5
    assert len(cand.logprobs_result["chosenCandidates"]) == 2
    usage_metadata: Any = response.usage_metadata
    assert response.initial_prompt_token_count == 20
    assert usage_metadata.initial_prompt_token_count == 20
    assert usage_metadata.prompt_token_count == 140
    assert usage_metadata.cached_content_token_count == 16
    assert usage_metadata.candidates_token_count == 150
    assert usage_metadata.total_token_count == 290
    assert usage_metadata.prompt_tokens_details == [{"modality": "TEXT", "tokenCount": 140}]
    assert usage_metadata.candidates_tokens_details == [{"modality": "TEXT", "tokenCount": 150}]


def _textbook_hops() -> list[list[Any]]:
    """The four streamed hops of upstream's compiler-textbook test."""

    def chunk(parts: Any, response_id: str, **fields: Any) -> dict[str, Any]:
        counts = fields.pop("counts", {})
        return hop(
            parts,
            modelVersion="gemini-2.5-pro",
            responseId=response_id,
            usageMetadata=usage(traffic_type="ON_DEMAND", **counts),
            **fields,
        )

    def counts(prompt: int, candidates: int, thoughts: int, total: int) -> dict[str, int]:
        return {
            "prompt_token_count": prompt,
            "cached_content_token_count": 10,
            "candidates_token_count": candidates,
            "thoughts_token_count": thoughts,
            "total_token_count": total,
        }

    def with_candidate(response: dict[str, Any], **candidate: Any) -> dict[str, Any]:
        response["candidates"][0].update(candidate)
        return response

    return [
        [
            chunk("# ENGINEERING A MODERN PRODUCTION COMPILER\n", "resp_hop_1"),
            with_candidate(
                chunk("## CHAPTER 1: Lexical Analysis\n", "resp_hop_1"),
                continuationToken=b64(b"AY89a181L6ffhy7s5hBG6S1Zea0DmuUzVC4ByCWe"),
            ),
            with_candidate(
                chunk(
                    [thought("", b"sig_hop_1")], "resp_hop_1", counts=counts(24, 32768, 400, 33192)
                ),
                finishReason="CONTINUATION",
            ),
        ],
        [
            with_candidate(
                chunk("## CHAPTER 2: SSA Optimization Pipeline\n", "resp_hop_2"),
                continuationToken=b64(b"stream_tok_hop_2"),
            ),
            with_candidate(
                chunk(
                    [thought("", b"sig_hop_2")],
                    "resp_hop_2",
                    counts=counts(32792, 32768, 300, 65860),
                ),
                finishReason="CONTINUATION",
            ),
        ],
        [
            with_candidate(
                chunk("## CHAPTER 3: Register Allocation\n", "resp_hop_3"),
                continuationToken=b64(b"stream_tok_hop_3"),
            ),
            with_candidate(
                chunk(
                    [thought("", b"sig_hop_3")],
                    "resp_hop_3",
                    counts=counts(65560, 32768, 200, 98528),
                ),
                finishReason="CONTINUATION",
            ),
        ],
        [
            chunk("## CHAPTER 4: Code Generation\n", "resp_hop_4"),
            with_candidate(
                chunk(
                    [thought("End of compiler textbook.", b"sig_hop_4")],
                    "resp_hop_4",
                    counts=counts(98328, 11903, 100, 110331),
                ),
                finishReason="STOP",
            ),
        ],
    ]


def _assert_textbook_tokens(requests: list[ModelRequest]) -> None:
    assert len(requests) == 4
    assert sent_token(requests[0]) is None
    assert sent_token(requests[1]) == b"AY89a181L6ffhy7s5hBG6S1Zea0DmuUzVC4ByCWe"
    assert sent_token(requests[2]) == b"stream_tok_hop_2"
    assert sent_token(requests[3]) == b"stream_tok_hop_3"
    for request in requests[1:]:
        assert len(request.contents) == 1
        assert request.contents == requests[0].contents


def _assert_textbook_last_chunk(chunks: list[types.GenerateContentResponse]) -> None:
    assert finish_reasons(chunks[:-1]) == [None] * (len(chunks) - 1)
    last: Any = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.initial_prompt_token_count == 24
    assert last.usage_metadata.initial_prompt_token_count == 24
    assert last.usage_metadata.prompt_token_count == 24 + 32792 + 65560 + 98328
    assert last.usage_metadata.cached_content_token_count == 40
    assert last.usage_metadata.candidates_token_count == 32768 * 3 + 11903
    assert last.usage_metadata.thoughts_token_count == 400 + 300 + 200 + 100
    assert last.usage_metadata.total_token_count == 33192 + 65860 + 98528 + 110331


@pytest.mark.xfail(strict=True, reason=STREAM_ONE_TURN)
def test_chat_send_message_stream_auto_resumes_across_hops(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Streaming send_message_stream yields chunks seamlessly across 4 continuation hops."""
    message = (
        "Write an exhaustive, multi-chapter textbook on compiler design "
        "that is around 100,000 tokens long."
    )
    chat = ledger.chats.create(model="gemini-2.5-pro")

    # Without AFC (disable=True)
    for chunks_of_hop in _textbook_hops():
        scripted.enqueue(chunks=chunks_of_hop)
    chunks = list(chat.send_message_stream(message, config=afc_off()))
    assert texts(chunks) == [
        "# ENGINEERING A MODERN PRODUCTION COMPILER\n",
        "## CHAPTER 1: Lexical Analysis\n",
        "",
        "## CHAPTER 2: SSA Optimization Pipeline\n",
        "",
        "## CHAPTER 3: Register Allocation\n",
        "",
        "## CHAPTER 4: Code Generation\n",
        "End of compiler textbook.",
    ]
    third: Any = chunks[2]
    assert third.initial_prompt_token_count == 24
    assert third.usage_metadata.prompt_token_count == 24
    _assert_textbook_last_chunk(chunks)
    assert chunks[-1].candidates[0].continuation_token is None
    _assert_textbook_tokens(scripted.requests)
    curated = chat.get_history(curated=True)
    assert len(curated) == 10  # 1 user + 9 model chunks

    # The default (AFC-enabled) path
    chat_default = ledger.chats.create(model="gemini-2.5-pro")
    start = len(scripted.requests)
    for chunks_of_hop in _textbook_hops():
        scripted.enqueue(chunks=chunks_of_hop)
    chunks = list(chat_default.send_message_stream(message))
    _assert_textbook_last_chunk(chunks)
    _assert_textbook_tokens(scripted.requests[start:])


def test_chat_afc_decoupled_from_continuation_token(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """AFC resumes continuation during thinking, then clears continuation_token on
    function_response."""

    def get_weather(city: str) -> str:
        """Gets weather for a city."""
        return f"Sunny in {city}"

    chat = ledger.chats.create(
        model="gemini-2.5-pro", config=types.GenerateContentConfig(tools=[get_weather])
    )
    scripted.enqueue(
        hop([thought("", b"thought_sig")], finish_reason="CONTINUATION", token=b"afc_tok_1")
    )
    scripted.enqueue(
        hop(
            [{"functionCall": {"name": "get_weather", "args": {"city": "Mountain View"}}}],
            finish_reason="STOP",
        )
    )
    scripted.enqueue(hop("It is Sunny in Mountain View!", finish_reason="STOP"))

    response = chat.send_message("What is the weather in Mountain View?")
    assert len(scripted.requests) == 3
    assert sent_token(scripted.requests[0]) is None
    assert sent_token(scripted.requests[1]) == b"afc_tok_1"
    assert sent_token(scripted.requests[2]) is None
    assert response.text == "It is Sunny in Mountain View!"


ASYNC_HOPS = [
    ("Async 1. ", "CONTINUATION", b"async_tok_1"),
    ("Async 2. ", "CONTINUATION", b"async_tok_2"),
    ("Async 3. ", "CONTINUATION", b"async_tok_3"),
    ("Async 4.", "STOP", None),
]


def _enqueue_async_hops(scripted: ScriptedTransport) -> None:
    for text, reason, token in ASYNC_HOPS:
        scripted.enqueue(hop(text, finish_reason=reason, token=token))


def _assert_async_unary_4_hops(requests: list[ModelRequest]) -> None:
    assert len(requests) == 4
    assert [sent_token(r) for r in requests] == [
        None,
        b"async_tok_1",
        b"async_tok_2",
        b"async_tok_3",
    ]
    for request in requests[1:]:
        assert request.contents == requests[0].contents


def _async_stream_hops() -> list[list[Any]]:
    def counts(prompt: int, candidates: int, thoughts: int, total: int) -> dict[str, Any]:
        return usage(
            prompt_token_count=prompt,
            cached_content_token_count=12,
            candidates_token_count=candidates,
            thoughts_token_count=thoughts,
            total_token_count=total,
            traffic_type="ON_DEMAND",
        )

    return [
        [
            hop(
                "Async chunk 1. ",
                token=b"async_stream_tok_1",
                usageMetadata=usage(traffic_type="ON_DEMAND"),
            ),
            hop(
                [thought("Async chunk 2. ", b"async_sig_1")],
                finish_reason="CONTINUATION",
                usageMetadata=counts(24, 32768, 400, 33192),
            ),
        ],
        [
            hop(
                "Async chunk 3. ",
                finish_reason="CONTINUATION",
                token=b"async_stream_tok_2",
                usageMetadata=counts(32792, 32768, 300, 65860),
            )
        ],
        [
            hop(
                "Async chunk 4. ",
                finish_reason="CONTINUATION",
                token=b"async_stream_tok_3",
                usageMetadata=counts(65560, 32768, 200, 98528),
            )
        ],
        [
            hop(
                "Async chunk 5.",
                finish_reason="STOP",
                usageMetadata=counts(98328, 1024, 100, 99452),
            )
        ],
    ]


def _assert_async_stream(
    chunks: list[types.GenerateContentResponse], requests: list[ModelRequest]
) -> None:
    assert texts(chunks) == [
        "Async chunk 1. ",
        "Async chunk 2. ",
        "Async chunk 3. ",
        "Async chunk 4. ",
        "Async chunk 5.",
    ]
    assert finish_reasons(chunks[:-1]) == [None] * (len(chunks) - 1)
    last: Any = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.initial_prompt_token_count == 24
    assert last.usage_metadata.initial_prompt_token_count == 24
    assert last.usage_metadata.prompt_token_count == 24 + 32792 + 65560 + 98328
    assert last.usage_metadata.cached_content_token_count == 48
    assert last.usage_metadata.candidates_token_count == 32768 * 3 + 1024
    assert last.usage_metadata.thoughts_token_count == 400 + 300 + 200 + 100
    assert last.usage_metadata.total_token_count == 33192 + 65860 + 98528 + 99452
    assert len(requests) == 4
    assert [sent_token(r) for r in requests] == [
        None,
        b"async_stream_tok_1",
        b"async_stream_tok_2",
        b"async_stream_tok_3",
    ]
    for request in requests[1:]:
        assert len(request.contents) == 1
        assert request.contents == requests[0].contents


async def test_async_chat_send_message_and_stream_auto_resume(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """AsyncChat auto-resumes on continuation_token across 4 hops in unary, AFC, and
    streaming modes."""
    tool_decl = types.Tool(
        function_declarations=[types.FunctionDeclaration(name="manual_fn", description="manual")]
    )
    configs: list[tuple[str, Any]] = [
        ("Hello async no afc", afc_off()),
        ("Hello async incompat", types.GenerateContentConfig(tools=[tool_decl])),
        ("Hello async default", None),
    ]
    for message, config in configs:
        chat = ledger.aio.chats.create(model="gemini-2.5-pro")
        start = len(scripted.requests)
        _enqueue_async_hops(scripted)
        resp = await chat.send_message(message, config=config)
        assert resp.text == "Async 1. Async 2. Async 3. Async 4."
        assert resp.candidates[0].finish_reason == types.FinishReason.STOP
        _assert_async_unary_4_hops(scripted.requests[start:])

    for message, config in [("Hello async stream no afc", afc_off()), ("Hello async stream", None)]:
        chat = ledger.aio.chats.create(model="gemini-2.5-pro")
        start = len(scripted.requests)
        for chunks_of_hop in _async_stream_hops():
            scripted.enqueue(chunks=chunks_of_hop)
        chunks = await collect(await chat.send_message_stream(message, config=config))
        second: Any = chunks[1]
        assert second.initial_prompt_token_count == 24
        _assert_async_stream(chunks, scripted.requests[start:])


async def test_async_chat_explicit_max_output_tokens_stops_on_max_tokens(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """When max_output_tokens is explicitly set, AsyncChat (unary and stream) does NOT
    auto-resume on MAX_TOKENS."""
    chat = ledger.aio.chats.create(
        model="gemini-2.5-pro", config=types.GenerateContentConfig(max_output_tokens=1000)
    )
    hop1 = hop("Stopped at async budget.", finish_reason="MAX_TOKENS", token=b"token_unused_async")

    # Async unary with chat-level max_output_tokens (default AFC)
    scripted.enqueue(hop1)
    response = await chat.send_message("Write a long essay")
    assert len(scripted.requests) == 1
    assert response.text == "Stopped at async budget."
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.candidates[0].continuation_token == b"token_unused_async"

    # Async unary with method-level max_output_tokens (AFC disabled)
    chat_no_default = ledger.aio.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(hop1)
    response = await chat_no_default.send_message(
        "Write a long essay",
        config=types.GenerateContentConfig(
            max_output_tokens=500,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    assert len(scripted.requests) == 2
    assert response.text == "Stopped at async budget."

    stream_chunks: list[Any] = [
        hop("Async stream stopped ", token=b"async_stream_token_unused"),
        hop("at budget.", finish_reason="MAX_TOKENS"),
    ]
    # Async stream with chat-level max_output_tokens (default AFC)
    chat_stream_budget = ledger.aio.chats.create(
        model="gemini-2.5-pro", config=types.GenerateContentConfig(max_output_tokens=1000)
    )
    scripted.enqueue(chunks=list(stream_chunks))
    chunks = await collect(await chat_stream_budget.send_message_stream("Write a long essay"))
    assert len(scripted.requests) == 3
    assert texts(chunks) == ["Async stream stopped ", "at budget."]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS

    # Async stream with method-level max_output_tokens (AFC disabled)
    scripted.enqueue(chunks=list(stream_chunks))
    chunks = await collect(
        await chat_no_default.send_message_stream(
            "Write a long essay",
            config=types.GenerateContentConfig(
                max_output_tokens=500,
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            ),
        )
    )
    assert len(scripted.requests) == 4
    assert texts(chunks) == ["Async stream stopped ", "at budget."]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_async_chat_automatic_continuation_config_rules(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Verifies Rules 2-4 for automatic_continuation and max_output_tokens pass-through
    in AsyncChat."""
    # Rule 2: automatic_continuation=True + max_output_tokens set -> enabled, forwarded
    chat = ledger.aio.chats.create(model="gemini-2.5-pro")
    _two_hops(scripted, "Async Hop 1. ", "Async Hop 2.", b"async_tok_1")
    resp = await chat.send_message(
        "Rule 2 async",
        config=types.GenerateContentConfig(automatic_continuation=True, max_output_tokens=1000),
    )
    assert len(scripted.requests) == 2
    assert resp.text == "Async Hop 1. Async Hop 2."
    assert sent_config(scripted.requests[0], "maxOutputTokens") == 1000
    assert sent_config(scripted.requests[1], "maxOutputTokens") == 1000

    # Rule 3: automatic_continuation=True + max_output_tokens unset -> enabled
    chat = ledger.aio.chats.create(model="gemini-2.5-pro")
    _two_hops(scripted, "Async Hop 1. ", "Async Hop 2.", b"async_tok_1")
    resp = await chat.send_message(
        "Rule 3 async", config=types.GenerateContentConfig(automatic_continuation=True)
    )
    assert len(scripted.requests) == 4
    assert resp.text == "Async Hop 1. Async Hop 2."

    # Rule 4: automatic_continuation=False + max_output_tokens unset -> disabled
    chat = ledger.aio.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(hop("Async Hop 1. ", finish_reason="CONTINUATION", token=b"async_tok_1"))
    resp = await chat.send_message(
        "Rule 4 async", config=types.GenerateContentConfig(automatic_continuation=False)
    )
    assert len(scripted.requests) == 5
    assert resp.text == "Async Hop 1. "


def test_chat_send_message_stream_incomplete_continuation_not_recorded(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """When a continuation hop is cut off without finish_reason, the turn is excluded
    from curated history."""
    chat = ledger.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(
        chunks=[
            hop("Hop 1 part. ", token=b"tok_hop_1"),
            hop("End of hop 1. ", finish_reason="CONTINUATION"),
        ]
    )
    scripted.enqueue(chunks=[hop("Hop 2 cut off mid-stream")])

    chunks = list(chat.send_message_stream("Write a long story"))
    assert len(scripted.requests) == 2
    assert texts(chunks) == ["Hop 1 part. ", "End of hop 1. ", "Hop 2 cut off mid-stream"]
    assert chat.get_history(curated=True) == []


async def test_async_chat_send_message_stream_incomplete_continuation_not_recorded(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """When an async continuation hop is cut off without finish_reason, the turn is
    excluded from curated history."""
    chat = ledger.aio.chats.create(model="gemini-2.5-pro")
    scripted.enqueue(
        chunks=[hop("Async Hop 1. ", finish_reason="CONTINUATION", token=b"async_tok_hop_1")]
    )
    scripted.enqueue(chunks=[hop("Async Hop 2 cut off")])

    chunks = await collect(await chat.send_message_stream("Write a long story"))
    assert len(scripted.requests) == 2
    assert texts(chunks) == ["Async Hop 1. ", "Async Hop 2 cut off"]
    assert chat.get_history(curated=True) == []


def _server_503() -> ServerError:
    return ServerError(
        503, {"error": {"code": 503, "message": "Service unavailable", "status": "UNAVAILABLE"}}
    )


def _checkpoint_hops(
    scripted: ScriptedTransport, prefix: str, token: bytes, final: str, error: Exception | None
) -> None:
    scripted.enqueue(
        chunks=[hop(f"{prefix}Intro. "), hop(f"{prefix}Ckpt 35k. ", token=token)], error=error
    )
    scripted.enqueue(chunks=[hop(final, finish_reason="STOP")])


@pytest.mark.xfail(strict=True, reason=STREAM_ONE_TURN)
def test_chat_send_message_stream_recovers_from_midstream_checkpoint_error(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """Chat.send_message_stream resumes when a hop ends or errors with finish_reason=None
    after receiving a continuation_token."""
    # 1. Recovers on both AFC paths (mid-stream exception or premature end)
    errors: list[Callable[[], Exception | None]] = [_server_503, lambda: None]
    for disable_afc in (False, True):
        for make_error in errors:
            chat = ledger.chats.create(model="gemini-2.5-pro")
            start = len(scripted.requests)
            _checkpoint_hops(
                scripted, "Chat ", b"chat_v2_ckpt_35k", "Chat resumed and completed.", make_error()
            )
            chunks = list(
                chat.send_message_stream(
                    "Write a long story",
                    config=types.GenerateContentConfig(
                        automatic_function_calling=types.AutomaticFunctionCallingConfig(
                            disable=disable_afc
                        )
                    ),
                )
            )
            sent = scripted.requests[start:]
            assert len(sent) == 2
            assert sent_token(sent[0]) is None
            assert sent_token(sent[1]) == b"chat_v2_ckpt_35k"
            assert texts(chunks) == [
                "Chat Intro. ",
                "Chat Ckpt 35k. ",
                "Chat resumed and completed.",
            ]
            history = chat.get_history(curated=True)
            assert len(history) == 4
            assert history[0].role == "user"
            assert [h.parts[0].text for h in history[1:]] == [
                "Chat Intro. ",
                "Chat Ckpt 35k. ",
                "Chat resumed and completed.",
            ]

    # 2. Error before any checkpoint token in the hop -> raises, records no curated history
    chat = ledger.chats.create(model="gemini-2.5-pro")
    start = len(scripted.requests)
    scripted.enqueue(chunks=[hop("Chat Intro. ")], error=ModelTimeoutError("read timed out"))
    stream = chat.send_message_stream("Write a long story")
    assert next(stream).text == "Chat Intro. "
    with pytest.raises(ModelTimeoutError):
        next(stream)
    assert len(scripted.requests) - start == 1
    assert chat.get_history(curated=True) == []


@pytest.mark.xfail(strict=True, reason=STREAM_ONE_TURN)
async def test_async_chat_send_message_stream_recovers_from_midstream_checkpoint_error(
    ledger: chatledger.Client, scripted: ScriptedTransport
) -> None:
    """AsyncChat.send_message_stream resumes when a hop ends or errors with
    finish_reason=None after receiving a continuation_token."""
    errors: list[Callable[[], Exception | None]] = [_server_503, lambda: None]
    for disable_afc in (False, True):
        for make_error in errors:
            chat = ledger.aio.chats.create(model="gemini-2.5-pro")
            start = len(scripted.requests)
            _checkpoint_hops(
                scripted,
                "Async Chat ",
                b"async_chat_v2_ckpt_35k",
                "Async Chat resumed.",
                make_error(),
            )
            chunks = await collect(
                await chat.send_message_stream(
                    "Write a long story async",
                    config=types.GenerateContentConfig(
                        automatic_function_calling=types.AutomaticFunctionCallingConfig(
                            disable=disable_afc
                        )
                    ),
                )
            )
            sent = scripted.requests[start:]
            assert len(sent) == 2
            assert sent_token(sent[1]) == b"async_chat_v2_ckpt_35k"
            assert texts(chunks) == [
                "Async Chat Intro. ",
                "Async Chat Ckpt 35k. ",
                "Async Chat resumed.",
            ]
            assert len(chat.get_history(curated=True)) == 4
