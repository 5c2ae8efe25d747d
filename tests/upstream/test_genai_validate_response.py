"""google-genai 3.3.0 ``tests/chats/test_validate_response.py``, ported.

google-genai's private ``chats._validate_response`` decides whether a response makes
its turn valid; chatledger's is :func:`chatledger.projections.history.response_is_valid`
(on the wire form the log records; a plain, not streamed, response).
"""

from __future__ import annotations

from chatledger import types
from chatledger.projections.history import response_is_valid


def _validate_response(response: types.GenerateContentResponse) -> bool:
    return response_is_valid(response.to_wire(), streamed=False)


def test_validate_response_default_response() -> None:
    response = types.GenerateContentResponse()

    assert not _validate_response(response)


def test_validate_response_empty_content() -> None:
    response = types.GenerateContentResponse(candidates=[])

    assert not _validate_response(response)


def test_validate_response_empty_parts() -> None:
    response = types.GenerateContentResponse(
        candidates=[types.Candidate(content=types.Content(parts=[]))]
    )

    assert not _validate_response(response)


def test_validate_response_empty_part() -> None:
    response = types.GenerateContentResponse(
        candidates=[types.Candidate(content=types.Content(parts=[types.Part()]))]
    )

    assert not _validate_response(response)


def test_validate_response_part_with_empty_text() -> None:
    response = types.GenerateContentResponse(
        candidates=[types.Candidate(content=types.Content(parts=[types.Part(text="")]))]
    )

    assert _validate_response(response)


def test_validate_response_part_with_text() -> None:
    response = types.GenerateContentResponse(
        candidates=[
            types.Candidate(content=types.Content(parts=[types.Part(text="response from model")]))
        ]
    )

    assert _validate_response(response)


def test_validate_response_part_with_function_call() -> None:
    response = types.GenerateContentResponse(
        candidates=[
            types.Candidate(
                content=types.Content(
                    parts=[
                        types.Part(
                            function_call=types.FunctionCall(name="foo", args={"bar": "baz"})
                        )
                    ]
                )
            )
        ]
    )

    assert _validate_response(response)
