"""Differential tests against google-genai 3.3.0 on Vertex AI, on one loopback server.

Both libraries are made with the same Vertex AI arguments (a project, a location and a
``google.oauth2.credentials.Credentials`` object, or express mode's API key) and the
same ``base_url``; every scenario runs through google-genai's chat and through
chatledger's with identical scripted replies, and the URLs (path and query), headers
(:func:`tests.support.vertex.comparable_headers`: all but the per-connection ones and
the library's own name) and bodies (:func:`tests.support.differential.canonical_request`)
each sends are compared, as are the histories. Which endpoint google-genai picks from
arguments and environment variables is compared with chatledger's choice directly.
No request leaves the machine: tokens come from the test or from the loopback server
acting as Google's OAuth token endpoint. See docs/chat-api.md ("Vertex AI").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.auth.exceptions import DefaultCredentialsError
from google.oauth2.credentials import Credentials

import chatledger
from chatledger.client.transports.vertex import VertexTransport
from chatledger.events.kinds import ModelCallStarted
from tests.support.differential import (
    FAILED_TURN_EVENTS,
    TURN_EVENTS,
    Run,
    assert_same,
    canonical_request,
    error_signature,
    http_error,
    model,
    sse,
    stream_texts,
    text_chunk,
    user,
)
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.vertex import (
    EXPRESS_KEY,
    LOCATION,
    PROJECT,
    QUOTA_PROJECT,
    TOKEN,
    VertexDifferential,
    comparable_headers,
    expired_credentials,
    refreshable_credentials,
    token_reply,
    write_service_account_file,
)

MODES = ["token", "express"]
MODEL = "gemini-test"
RESOURCE = f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}"
EXPRESS_RESOURCE = f"/v1beta1/publishers/google/models/{MODEL}"


@pytest.fixture(params=MODES)
def vdiff(
    request: pytest.FixtureRequest, gemini_server: GeminiServer, db_path: Path
) -> Iterator[VertexDifferential]:
    differential = VertexDifferential(gemini_server, db_path, mode=request.param)
    yield differential
    differential.close()


@pytest.fixture(params=MODES)
async def avdiff(
    request: pytest.FixtureRequest, gemini_server: GeminiServer, db_path: Path
) -> AsyncIterator[VertexDifferential]:
    differential = VertexDifferential(gemini_server, db_path, mode=request.param)
    yield differential
    differential.close_resumed()
    await differential.aclose()


def assert_same_requests(g: Run, led: Run, *, streamed: bool = False) -> None:
    """URLs, queries, headers and bodies: what each library sent, request by request;
    the histories too. After a stream of several chunks, the histories and the contents
    of later requests differ as docs/differences.md#stream-one-turn says (google-genai
    keeps each chunk as its own model content): only the first request's contents are
    compared then, and every other field of every body."""
    if streamed:
        assert led.paths == g.paths
        assert led.bodies[0] == g.bodies[0]
        assert [{**b, "contents": None} for b in led.bodies] == [
            {**b, "contents": None} for b in g.bodies
        ]
    else:
        assert_same(g, led)
    assert [r.query for r in led.requests] == [r.query for r in g.requests]
    assert [comparable_headers(r, "chatledger") for r in led.requests] == [
        comparable_headers(r, "genai") for r in g.requests
    ]


def expected_auth(mode: str, token: str = TOKEN) -> dict[str, str]:
    if mode == "express":
        return {"x-goog-api-key": EXPRESS_KEY}
    return {"authorization": f"Bearer {token}", "x-goog-user-project": QUOTA_PROJECT}


def resource(mode: str) -> str:
    return EXPRESS_RESOURCE if mode == "express" else RESOURCE


HISTORY = [user("Hello"), model("Hi! How can I help?")]
CONFIG: dict[str, Any] = {
    "system_instruction": "Answer in one line.",
    "temperature": 0.2,
    "max_output_tokens": 64,
    "stop_sequences": ["END"],
    "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
    "labels": {"team": "ledger"},
}


# =========================================================================== send_message


def test_send_message_with_history_and_config(vdiff: VertexDifferential) -> None:
    def script(chat: Any, t: Any) -> Any:
        first = chat.send_message("What is a ledger?").text
        second = chat.send_message("Shorter").text
        return [first, second]

    g, led = vdiff.run(
        [text_response("A record."), text_response("Records.")],
        script,
        model=MODEL,
        history=HISTORY,
        config=CONFIG,
    )

    assert g.observed == led.observed == ["A record.", "Records."]
    assert_same_requests(g, led)
    mode = vdiff.mode
    assert led.paths == [f"{resource(mode)}:generateContent"] * 2
    headers = comparable_headers(led.requests[0], "chatledger")
    assert headers == {
        "accept": "*/*",
        "content-type": "application/json",
        "user-agent": headers["user-agent"],
        "x-goog-api-client": headers["x-goog-api-client"],
        **expected_auth(mode),
    }
    body = led.requests[1].body
    assert body["contents"] == [
        *HISTORY,
        user("What is a ledger?"),
        model("A record."),
        user("Shorter"),
    ]
    assert body["systemInstruction"] == {"parts": [{"text": "Answer in one line."}], "role": "user"}
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }
    assert body["labels"] == {"team": "ledger"}
    assert led.full == [
        *HISTORY,
        user("What is a ledger?"),
        model("A record."),
        user("Shorter"),
        model("Records."),
    ]


def test_a_timeout_sends_the_same_server_timeout_header(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """``http_options.timeout`` (milliseconds) travels as ``X-Server-Timeout`` (whole
    seconds, rounded up) from both libraries."""
    vdiff = VertexDifferential(gemini_server, db_path, http_options={"timeout": 12_500})
    try:
        g, led = vdiff.run(
            [text_response("ok")], lambda chat, t: chat.send_message("hi").text, model=MODEL
        )
    finally:
        vdiff.close()
    assert_same_requests(g, led)
    assert led.requests[0].headers["x-server-timeout"] == "13"


VERTEX_ONLY_CONFIG: dict[str, Any] = {
    "temperature": 0.5,
    "model_selection_config": {"feature_selection_preference": "PRIORITIZE_QUALITY"},
    "model_armor_config": {"prompt_template_name": "projects/p/locations/l/templates/t"},
    "audio_timestamp": True,
    "routing_config": {"auto_mode": {"model_routing_preference": "BALANCED"}},
}


def test_vertex_only_config_fields_go_where_google_genai_puts_them(
    vdiff: VertexDifferential,
) -> None:
    """``model_selection_config`` becomes ``generationConfig.modelConfig``,
    ``model_armor_config`` a top-level ``modelArmorConfig``, as google-genai sends them."""
    g, led = vdiff.run(
        [text_response("ok")],
        lambda chat, t: chat.send_message("hi").text,
        model=MODEL,
        config=VERTEX_ONLY_CONFIG,
    )
    assert_same_requests(g, led)
    body = led.requests[0].body
    assert body["modelArmorConfig"] == VERTEX_ONLY_CONFIG["model_armor_config"]
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "modelConfig": {"feature_selection_preference": "PRIORITIZE_QUALITY"},
        "audioTimestamp": True,
        "routingConfig": {"auto_mode": {"model_routing_preference": "BALANCED"}},
    }


@pytest.mark.parametrize("field", ["store", "enable_enhanced_civic_answers"])
def test_a_developer_api_only_field_is_refused_by_both(
    field: str, vdiff: VertexDifferential
) -> None:
    """google-genai raises ValueError before sending; chatledger refuses the chat before
    anything is recorded."""
    config = {field: True}
    with pytest.raises(ValueError, match="only supported in Gemini Developer API"):
        vdiff.genai.chats.create(model=MODEL, config=config).send_message("hi")  # type: ignore[arg-type]
    with pytest.raises(
        chatledger.InvalidInputError, match="only supported by the Gemini Developer API"
    ):
        vdiff.ledger.chats.create(model=MODEL, config=config)
    assert vdiff.ledger.chats.list() == []
    assert vdiff.server.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_extra_headers_and_the_credentials_in_google_genais_order(
    mode: str, gemini_server: GeminiServer, db_path: Path
) -> None:
    """``http_options.headers`` are sent by both; an ``Authorization`` header given
    there is replaced by the access token, and an ``x-goog-api-key`` header replaces
    the express-mode key, as in google-genai."""
    headers = {
        "X-Team": "ledger",
        "Authorization": "Bearer user-given-1234",
        "x-goog-api-key": "header-key-5678",
    }
    vdiff = VertexDifferential(gemini_server, db_path, mode=mode, http_options={"headers": headers})
    try:
        g, led = vdiff.run(
            [text_response("ok")], lambda chat, t: chat.send_message("hi").text, model=MODEL
        )
    finally:
        vdiff.close()
    assert_same_requests(g, led)
    sent = led.requests[0].headers
    assert sent["x-team"] == "ledger"
    if mode == "token":
        assert sent["authorization"] == f"Bearer {TOKEN}"
    else:
        assert sent["authorization"] == "Bearer user-given-1234"
    assert sent["x-goog-api-key"] == "header-key-5678"


def test_an_error_from_vertex_is_the_same_error(vdiff: VertexDifferential) -> None:
    """A 403 from Vertex AI: the same class, code, status and message from both; the
    history is unchanged and chatledger records the failed call."""
    message = "Permission 'aiplatform.endpoints.predict' denied on resource"

    def script(chat: Any, t: Any) -> Any:
        try:
            chat.send_message("hi")
        except Exception as exc:
            return error_signature(exc)
        return None

    g, led = vdiff.run([http_error(403, "PERMISSION_DENIED", message)], script, model=MODEL)
    assert g.observed == led.observed
    assert led.observed is not None and led.observed[:3] == (
        "ClientError",
        403,
        "PERMISSION_DENIED",
    )
    assert_same_requests(g, led)
    assert led.full == g.full == []
    assert led.events == ["conversation_started", *FAILED_TURN_EVENTS]


# =========================================================================== streams


def test_stream_then_send(vdiff: VertexDifferential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return [stream_texts(chat, "Count to three"), chat.send_message("Again?").text]

    chunks = [text_chunk("one, "), text_chunk("two, "), text_chunk("three", "STOP")]
    g, led = vdiff.run([sse(*chunks), text_response("No.")], script, model=MODEL, config=CONFIG)

    assert g.observed == led.observed == [["one, ", "two, ", "three"], "No."]
    assert_same_requests(g, led, streamed=True)
    assert led.paths == [
        f"{resource(vdiff.mode)}:streamGenerateContent",
        f"{resource(vdiff.mode)}:generateContent",
    ]
    assert led.requests[0].query == {"alt": ["sse"]}
    assert led.full == [
        user("Count to three"),
        model("one, two, three"),
        user("Again?"),
        model("No."),
    ]


# =========================================================================== async


async def test_async_send_and_stream(avdiff: VertexDifferential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        sent = (await chat.send_message("Hello")).text
        streamed = [chunk.text async for chunk in await chat.send_message_stream("More")]
        return [sent, streamed]

    replies = [text_response("Hi"), sse(text_chunk("a"), text_chunk("b", "STOP"))]
    g, led = await avdiff.arun(replies, script, model=MODEL, history=HISTORY, config=CONFIG)

    assert g.observed == led.observed == ["Hi", ["a", "b"]]
    assert_same_requests(g, led, streamed=True)
    assert led.paths[1] == f"{resource(avdiff.mode)}:streamGenerateContent"


# =========================================================================== function calling


def get_weather(city: str) -> dict:  # type: ignore[type-arg]
    """The weather in a city."""
    return {"temp_c": 21, "city": city}


CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def test_automatic_function_calling(vdiff: VertexDifferential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather in Paris?").text

    replies = [text_response(parts=[CALL]), text_response("21 C in Paris.")]
    g, led = vdiff.run(replies, script, model=MODEL, config={"tools": [get_weather]})

    assert g.observed == led.observed == "21 C in Paris."
    assert_same_requests(g, led)
    assert led.contents[1][-1] == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": "get_weather",
                    "response": {"result": {"temp_c": 21, "city": "Paris"}},
                }
            }
        ],
    }


def test_declared_function_answered_by_the_caller(vdiff: VertexDifferential) -> None:
    declaration = {
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "get_weather",
                        "description": "The weather in a city.",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                        },
                    }
                ]
            }
        ],
        "tool_config": {"function_calling_config": {"mode": "ANY"}},
    }

    def script(chat: Any, t: Any) -> Any:
        call = chat.send_message("Weather in Paris?").function_calls[0]
        answer = t.Part.from_function_response(name=call.name, response={"temp_c": 21})
        return [call.args, chat.send_message(answer).text]

    replies = [text_response(parts=[CALL]), text_response("21 C.")]
    g, led = vdiff.run(replies, script, model=MODEL, config=declaration)

    assert g.observed == led.observed == [{"city": "Paris"}, "21 C."]
    assert_same_requests(g, led)
    assert led.requests[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


# =========================================================================== tokens


@pytest.mark.parametrize("start", ["no-token", "expired"])
def test_a_missing_or_expired_token_is_refreshed_first(
    start: str, gemini_server: GeminiServer, db_path: Path
) -> None:
    """Both refresh through google-auth before the first call (the loopback server is
    the OAuth token endpoint), send the new token, and keep it while it is valid."""
    token_uri = gemini_server.base_url + "/token"

    def make() -> Any:
        if start == "expired":
            return expired_credentials(token_uri, "ya29.expired-token-DO-NOT-LEAK")
        return refreshable_credentials(token_uri)

    vdiff = VertexDifferential(gemini_server, db_path, credentials=make)
    fresh = "ya29.fresh-token-DO-NOT-LEAK-0a1b"
    try:

        def script(chat: Any, t: Any) -> Any:
            return [chat.send_message("one").text, chat.send_message("two").text]

        replies = [token_reply(fresh), text_response("1"), text_response("2")]
        g, led = vdiff.run(replies, script, model=MODEL)
    finally:
        vdiff.close()

    assert g.observed == led.observed == ["1", "2"]
    for run in (g, led):
        assert [r.path for r in run.requests] == [
            "/token",
            f"{RESOURCE}:generateContent",
            f"{RESOURCE}:generateContent",
        ]
        assert b"grant_type=refresh_token" in run.requests[0].body
        assert all(r.headers["authorization"] == f"Bearer {fresh}" for r in run.requests[1:])
    assert [comparable_headers(r, "chatledger") for r in led.requests[1:]] == [
        comparable_headers(r, "genai") for r in g.requests[1:]
    ]
    assert [canonical_request(r.body, genai_quirks=False) for r in led.requests[1:]] == [
        canonical_request(r.body, genai_quirks=True) for r in g.requests[1:]
    ]
    assert sorted(led.requests[0].body.split(b"&")) == sorted(g.requests[0].body.split(b"&"))


def test_application_default_credentials(
    gemini_server: GeminiServer, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credentials given: both load Application Default Credentials (a service
    account key file named by ``GOOGLE_APPLICATION_CREDENTIALS``) at the first call and
    get a token from its token endpoint (the loopback server), by a signed JWT grant."""
    adc = write_service_account_file(
        tmp_path / "service-account.json", gemini_server.base_url + "/token"
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    options = {"base_url": gemini_server.base_url}
    kwargs: dict[str, Any] = {"vertexai": True, "project": PROJECT, "location": LOCATION}
    requests: dict[str, list[Any]] = {}
    for library in ("genai", "chatledger"):
        start = len(gemini_server.requests)
        gemini_server.reply_json(token_reply(f"ya29.adc-{library}-DO-NOT-LEAK"))
        gemini_server.reply_text("hi")
        if library == "genai":
            with genai.Client(http_options=options, **kwargs) as client:  # type: ignore[arg-type]
                assert client.chats.create(model=MODEL).send_message("hello").text == "hi"
        else:
            with chatledger.Client(http_options=options, store=str(db_path), **kwargs) as ledger:
                assert ledger.chats.create(model=MODEL).send_message("hello").text == "hi"
        requests[library] = gemini_server.requests[start:]
    for library, sent in requests.items():
        assert [r.path for r in sent] == ["/token", f"{RESOURCE}:generateContent"]
        assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in sent[0].body
        assert sent[1].headers["authorization"] == f"Bearer ya29.adc-{library}-DO-NOT-LEAK"
    assert comparable_headers(requests["chatledger"][1], "chatledger") == {
        **comparable_headers(requests["genai"][1], "genai"),
        "authorization": "Bearer ya29.adc-chatledger-DO-NOT-LEAK",
    }


def test_the_project_of_application_default_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No project and no key: both take the project of ADC when the client is made,
    with the location ``global`` (nothing is sent)."""
    adc = write_service_account_file(tmp_path / "sa.json", "http://127.0.0.1:9/token", "adc-proj")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    google_client = genai.Client(vertexai=True)
    api = google_client._api_client
    with chatledger.Client(vertexai=True) as ledger:
        assert ledger.vertex is not None
        assert (ledger.vertex.project, ledger.vertex.location) == (api.project, api.location)
        assert (ledger.vertex.project, ledger.vertex.location) == ("adc-proj", "global")
        assert ledger.vertex.base_url == api._http_options.base_url
        assert type(ledger.vertex.credentials) is type(api._credentials)
    google_client.close()


def test_no_application_default_credentials_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADC needed but not found: google-genai raises google-auth's
    DefaultCredentialsError; chatledger an InvalidInputError saying what to do."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(DefaultCredentialsError):
        genai.Client(vertexai=True)
    with pytest.raises(chatledger.InvalidInputError) as raised:
        chatledger.Client(vertexai=True)
    message = str(raised.value)
    assert "no Google Cloud credentials for Vertex AI" in message
    assert "gcloud auth application-default login" in message


# =========================================================================== events


def test_events_record_the_endpoint_kind(
    vdiff: VertexDifferential, gemini_server: GeminiServer, tmp_path: Path
) -> None:
    """docs/events.md: ``model_call_started`` says which endpoint served the call."""
    led = vdiff.run_ledger(
        [text_response("hi"), sse(text_chunk("yo", "STOP"))],
        lambda chat, t: [chat.send_message("a").text, stream_texts(chat, "b")],
        model=MODEL,
    )
    assert led.events == ["conversation_started", *TURN_EVENTS, *TURN_EVENTS]
    started = led.event_data("model_call_started")
    assert all(isinstance(s, ModelCallStarted) for s in started)
    assert [(s.endpoint, s.transport) for s in started] == [("vertex", "vertex")] * 2
    assert isinstance(vdiff.ledger.transport_for(MODEL), VertexTransport)

    gemini = chatledger.Client(
        api_key="gemini-key-1234", http_options={"base_url": gemini_server.base_url}
    )
    with gemini:
        gemini_server.reply_text("hi")
        chat = gemini.chats.create(model=MODEL)
        chat.send_message("a")
        (call,) = [e.data for e in gemini.store.read(chat.id) if e.type == "model_call_started"]
        assert isinstance(call, ModelCallStarted)
    assert (call.endpoint, call.transport) == ("gemini", "gemini")
    # Only Gemini models change endpoint: the local model stays in process.
    assert vdiff.ledger.transport_for("local").endpoint_kind == ""


# =========================================================================== choosing the endpoint


ENV = ("GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "GOOGLE_API_KEY", "GEMINI_API_KEY")
CASES: list[Any] = [
    pytest.param(
        {"vertexai": True, "project": "p1", "location": "europe-west4"}, {}, id="explicit"
    ),
    pytest.param({"vertexai": True, "project": "p1", "location": "global"}, {}, id="global"),
    pytest.param({"vertexai": True, "project": "p1", "location": "us"}, {}, id="multi-region"),
    pytest.param({"vertexai": True, "project": "p1"}, {}, id="no-location-is-global"),
    pytest.param({"vertexai": True, "api_key": "k-explicit"}, {}, id="express"),
    pytest.param(
        {"vertexai": True, "api_key": "k-explicit"},
        {"GOOGLE_CLOUD_PROJECT": "envp", "GOOGLE_CLOUD_LOCATION": "asia-east1"},
        id="explicit-key-beats-env-project",
    ),
    pytest.param(
        {"vertexai": True, "project": "p1", "location": "us-east1"},
        {"GOOGLE_API_KEY": "k-env"},
        id="explicit-project-beats-env-key",
    ),
    pytest.param(
        {"vertexai": True},
        {
            "GOOGLE_CLOUD_PROJECT": "envp",
            "GOOGLE_CLOUD_LOCATION": "asia-east1",
            "GEMINI_API_KEY": "k",
        },
        id="env-project-beats-env-key",
    ),
    pytest.param({"vertexai": True}, {"GOOGLE_API_KEY": "k-env"}, id="env-key-express"),
    pytest.param(
        {"vertexai": True},
        {"GOOGLE_API_KEY": "k-google", "GEMINI_API_KEY": "k-gemini"},
        id="google-api-key-first",
    ),
    pytest.param(
        {}, {"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_PROJECT": "envp"}, id="env-switch"
    ),
    pytest.param(
        {},
        {
            "GOOGLE_GENAI_USE_VERTEXAI": "1",
            "GOOGLE_CLOUD_PROJECT": "e",
            "GOOGLE_CLOUD_LOCATION": "eu",
        },
        id="env-switch-1",
    ),
    pytest.param(
        {},
        {"GOOGLE_GENAI_USE_ENTERPRISE": "true", "GOOGLE_CLOUD_PROJECT": "envp"},
        id="enterprise-env",
    ),
    pytest.param(
        {"vertexai": False},
        {"GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_API_KEY": "k"},
        id="argument-beats-env-switch",
    ),
    pytest.param(
        {}, {"GOOGLE_GENAI_USE_VERTEXAI": "false", "GOOGLE_API_KEY": "k"}, id="env-switch-off"
    ),
    pytest.param(
        {"enterprise": True, "project": "p1", "location": "us-east4"}, {}, id="enterprise"
    ),
    pytest.param(
        {"enterprise": False, "vertexai": False}, {"GOOGLE_API_KEY": "k"}, id="enterprise-agrees"
    ),
    pytest.param(
        {"enterprise": True, "vertexai": False, "project": "p1"}, {}, id="enterprise-conflict"
    ),
    pytest.param(
        {"vertexai": True, "project": "p1", "location": "us-central1"},
        {"GOOGLE_GENAI_API_VERSION": "v1"},
        id="api-version-env",
    ),
    pytest.param(
        {
            "vertexai": True,
            "project": "p1",
            "location": "us-central1",
            "http_options": {"api_version": "v1"},
        },
        {},
        id="api-version-option",
    ),
    # Refused by both.
    pytest.param(
        {"project": "p1", "location": "l"}, {"GOOGLE_API_KEY": "k"}, id="project-without-vertex"
    ),
    pytest.param(
        {"vertexai": True, "api_key": "k", "credentials": "CREDENTIALS"},
        {},
        id="key-and-credentials",
    ),
]


@pytest.mark.parametrize(("kwargs", "env"), CASES)
def test_the_endpoint_is_chosen_as_google_genai_chooses_it(
    kwargs: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same arguments and environment give the same kind of API, project, location,
    key, base URL and API version as google-genai 3.3.0 (or both refuse them)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if kwargs.get("credentials") == "CREDENTIALS":
        kwargs = {**kwargs, "credentials": refreshable_credentials("http://127.0.0.1:9/token")}
    try:
        google_client = genai.Client(**kwargs)
    except ValueError as exc:
        with pytest.raises(ValueError) as refused:
            chatledger.Client(**kwargs)
        assert isinstance(refused.value, chatledger.InvalidInputError), exc
        return
    api = google_client._api_client
    with chatledger.Client(**kwargs) as ledger:
        vertex = ledger.vertex
        if not api.vertexai:
            assert vertex is None
            assert ledger.transport_for(MODEL).endpoint_kind == "gemini"
            return
        assert vertex is not None
        assert (vertex.project, vertex.location, vertex.api_key) == (
            api.project,
            api.location,
            api.api_key,
        )
        assert (vertex.base_url, vertex.api_version) == (
            api._http_options.base_url,
            api._http_options.api_version,
        )
        transport = ledger.transport_for(MODEL)
        assert isinstance(transport, VertexTransport)
        assert transport.url(MODEL, "generateContent") == (
            api._build_request("post", f"publishers/google/models/{MODEL}:generateContent", {}).url
        )
    google_client.close()


def test_model_names_map_to_the_same_resource_paths(gemini_server: GeminiServer) -> None:
    """``gemini-x``, ``publisher/model``, ``models/...`` and a full resource name."""
    kwargs: dict[str, Any] = {"vertexai": True, "project": PROJECT, "location": LOCATION}
    google_client = genai.Client(**kwargs)
    from google.genai import _transformers

    with chatledger.Client(**kwargs) as ledger:
        transport = ledger.transport_for(MODEL)
        assert isinstance(transport, VertexTransport)
        for name in (
            "gemini-2.5-flash",
            "anthropic/claude-x",
            "models/123",
            f"projects/{PROJECT}/locations/{LOCATION}/endpoints/42",
        ):
            path = _transformers.t_model(google_client._api_client, name) + ":generateContent"
            expected = google_client._api_client._build_request("post", path, {}).url
            assert transport.url(name, "generateContent") == expected
    google_client.close()


class RecordingCredentials(Credentials):
    """google-auth user credentials that note which thread each refresh runs in."""

    threads: list[int]

    def refresh(self, request: Any) -> None:
        self.threads.append(threading.get_ident())
        super().refresh(request)  # type: ignore[no-untyped-call]


def test_async_refresh_happens_off_the_event_loop(
    gemini_server: GeminiServer, db_path: Path
) -> None:
    """An async chat refreshes an expired token in a worker thread (google-auth's refresh
    is blocking I/O), not on the event loop's thread, then sends the new token."""
    credentials = RecordingCredentials(  # type: ignore[no-untyped-call]
        token="ya29.old-token-1234",
        refresh_token="1//refresh-async-test",
        client_id="test-client-id",
        client_secret="client-secret-async-test",
        token_uri=gemini_server.base_url + "/token",
        expiry=datetime.datetime(2000, 1, 1),
    )
    credentials.threads = []
    fresh = "ya29.async-fresh-DO-NOT-LEAK-77"
    gemini_server.reply_json(token_reply(fresh))
    gemini_server.reply_text("hi")
    loop_threads: list[int] = []

    async def main() -> str | None:
        loop_threads.append(threading.get_ident())
        client = chatledger.Client(
            vertexai=True,
            project=PROJECT,
            location=LOCATION,
            credentials=credentials,
            http_options={"base_url": gemini_server.base_url},
            store=str(db_path),
        )
        async with contextlib.aclosing(client.aio):
            return (await client.aio.chats.create(model=MODEL).send_message("x")).text

    assert asyncio.run(main()) == "hi"
    assert [r.path for r in gemini_server.requests] == ["/token", f"{RESOURCE}:generateContent"]
    assert gemini_server.requests[1].headers["authorization"] == f"Bearer {fresh}"
    assert credentials.token == fresh and not credentials.expired
    assert len(credentials.threads) == 1 and credentials.threads != loop_threads


def test_credentials_that_are_not_google_auth_credentials_are_refused() -> None:
    with pytest.raises(chatledger.InvalidInputError, match=r"must be google\.auth credentials"):
        chatledger.Client(vertexai=True, project=PROJECT, location=LOCATION, credentials="ya29.x")


def test_a_developer_api_only_field_in_a_per_message_config_fails_the_call(
    vdiff: VertexDifferential,
) -> None:
    """Given with one message, the field is refused when that call's request is made:
    nothing is sent, the history is unchanged, the failed call is recorded."""
    chat = vdiff.ledger.chats.create(model=MODEL)
    with pytest.raises(chatledger.InvalidInputError, match="only supported by the Gemini"):
        chat.send_message("hi", config={"store": True})
    assert vdiff.server.requests == []
    assert chat.get_history() == []
    assert [e.type for e in chat.events()] == ["conversation_started", *FAILED_TURN_EVENTS]


def test_google_auth_is_imported_only_when_used() -> None:
    """``import chatledger`` (and a Gemini API or express-mode client) never imports
    google-auth: the ``vertex`` extra is optional."""
    code = (
        "import sys, chatledger\n"
        "chatledger.Client(vertexai=True, api_key='express-key-1234').close()\n"
        "chatledger.Client(api_key='gemini-key-1234').close()\n"
        "print('google.auth' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
