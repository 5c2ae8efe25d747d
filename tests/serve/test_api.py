"""The HTTP API over real HTTP: uvicorn on a loopback port, the scripted transport or the
loopback Gemini-protocol server behind it, a real SQLite file under it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.events import ModelCallStarted
from chatledger.events.audit import import_lines
from chatledger.serve.settings import ServeSettings
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.narrow import stream_version, text_of

from .support import Served, serve_in_thread, sse_events


def create(served: Served, **body: Any) -> dict[str, Any]:
    response = served.api_post("/api/conversations", {"model": "gemini-2.5-flash", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def send(served: Served, cid: str, message: Any, **body: Any) -> httpx.Response:
    return served.api_post(f"/api/conversations/{cid}/messages", {"message": message, **body})


def stream(served: Served, cid: str, message: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    events = []
    with served.http.stream(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"message": message, "stream": True},
        **kwargs,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event, data, _ in sse_events(response.iter_lines()):
            events.append((event, json.loads(data)))
    return events


def test_the_openapi_schema_documents_every_endpoint(served: Served) -> None:
    schema = served.http.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/conversations",
        "/api/conversations/{conversation_id}",
        "/api/conversations/{conversation_id}/history",
        "/api/conversations/{conversation_id}/messages",
        "/api/conversations/{conversation_id}/events",
        "/api/conversations/{conversation_id}/events/stream",
        "/api/events",
        "/api/events/stream",
        "/api/conversations/{conversation_id}/fork",
        "/api/conversations/{conversation_id}/rewind",
        "/api/conversations/{conversation_id}/verify",
        "/api/verify",
        "/api/conversations/{conversation_id}/export",
        "/api/conversations/{conversation_id}/tree",
        "/api/diff",
    ):
        assert path in paths, path
    assert not any(not path.startswith("/api/") for path in paths), "pages are not in the API"
    send_op = paths["/api/conversations/{conversation_id}/messages"]["post"]
    assert "text/event-stream" in send_op["responses"]["200"]["content"]
    # Swagger UI would load scripts from a CDN: it is not served.
    assert served.http.get("/docs").status_code == 404


def test_create_send_and_read_back(served: Served, scripted: ScriptedTransport) -> None:
    scripted.enqueue("Paris.")
    conversation = create(served, config={"system_instruction": "Be brief."})
    cid = conversation["conversation_id"]
    assert conversation["version"] == 1 and conversation["turns"] == 0
    assert conversation["config"]["systemInstruction"] == "Be brief."

    response = send(served, cid, "Capital of France?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "Paris."
    assert body["turns"] == 1 and body["version"] == 4

    got = served.http.get(f"/api/conversations/{cid}").json()
    assert got["turns"] == 1 and got["version"] == 4 and got["model_calls"] == 1
    # What the API says is what the library reads from the log.
    chat = served.client.chats.get(cid)
    history = served.http.get(f"/api/conversations/{cid}/history").json()
    assert history["contents"] == [c.to_wire() for c in chat.get_history()]
    assert [e.actor for e in chat.events()] == ["tester"] * 4
    assert scripted.requests[0].contents[-1]["parts"][0]["text"] == "Capital of France?"


def test_a_streamed_reply_arrives_chunk_by_chunk_as_server_sent_events(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue(chunks=["Once ", "upon ", "a time."])
    cid = create(served)["conversation_id"]
    events = stream(served, cid, "Tell a story")
    kinds = [kind for kind, _ in events]
    assert kinds == ["chunk", "chunk", "chunk", "done"]
    assert "".join(data["text"] for kind, data in events if kind == "chunk") == "Once upon a time."
    done = events[-1][1]
    assert done["text"] == "Once upon a time." and done["version"] == 4
    recorded = served.client.chats.get(cid)
    assert text_of(recorded.get_history()[-1]) == "Once upon a time."
    started = [e.data for e in recorded.events() if isinstance(e.data, ModelCallStarted)]
    assert started[0].streamed is True


def test_accept_event_stream_chooses_streaming(served: Served, scripted: ScriptedTransport) -> None:
    scripted.enqueue(chunks=["a", "b"])
    cid = create(served)["conversation_id"]
    with served.http.stream(
        "POST",
        f"/api/conversations/{cid}/messages",
        json={"message": "x"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        kinds = [event for event, _, _ in sse_events(response.iter_lines())]
    assert kinds == ["chunk", "chunk", "done"]


def test_histories_as_of_a_version_are_the_library_s(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("one").enqueue("two")
    cid = create(served)["conversation_id"]
    send(served, cid, "first")
    send(served, cid, "second")
    chat = served.client.chats.get(cid)
    for view in ("full", "curated", "context"):
        for as_of in (1, 2, 4, 5, 7):
            got = served.http.get(
                f"/api/conversations/{cid}/history", params={"view": view, "as_of": as_of}
            ).json()
            if view == "context":
                expected = chat.get_context(as_of=as_of)
            else:
                expected = chat.get_history(curated=view == "curated", as_of=as_of)
            assert got["contents"] == [c.to_wire() for c in expected], (view, as_of)
            assert got["as_of"] == as_of
    assert len(served.http.get(f"/api/conversations/{cid}/history?as_of=4").json()["contents"]) == 2
    too_far = served.http.get(f"/api/conversations/{cid}/history?as_of=99")
    assert too_far.status_code == 400
    assert "is not a version of conversation" in too_far.json()["error"]["message"]


def test_events_after_a_version_and_after_a_position(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("a").enqueue("b")
    first = create(served)["conversation_id"]
    second = create(served)["conversation_id"]
    send(served, first, "x")
    send(served, second, "y")
    page = served.http.get(f"/api/conversations/{first}/events?after_version=1&limit=2").json()
    assert [e["version"] for e in page["events"]] == [2, 3] and page["next"] == 3
    rest = served.http.get(f"/api/conversations/{first}/events?after_version=3").json()
    assert [e["version"] for e in rest["events"]] == [4]
    exported = served.client.store.read(first)[3].to_export()
    assert rest["events"][0] == exported  # the envelope exactly as stored, hash included

    everything = []
    after = 0
    while True:
        page = served.http.get(f"/api/events?after_position={after}&limit=3").json()
        if not page["events"]:
            break
        everything.extend(page["events"])
        after = page["next"]
    assert [e["position"] for e in everything] == list(range(1, 9))
    assert {e["conversation_id"] for e in everything} == {first, second}


def _follow(
    served: Served, path: str, found: list[dict[str, Any]], want: int, headers: Any = None
) -> threading.Thread:
    def run() -> None:
        with (
            httpx.Client(base_url=served.base_url, timeout=30) as http,
            http.stream("GET", path, headers=headers or {}) as response,
        ):
            assert response.status_code == 200
            for event, data, event_id in sse_events(response.iter_lines()):
                assert event == "event"
                found.append({**json.loads(data), "sse_id": event_id})
                if len(found) >= want:
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_following_events_live_sees_what_another_process_appends(
    served: Served, db_path: Any
) -> None:
    found: list[dict[str, Any]] = []
    follower = _follow(served, "/api/events/stream?after_position=0", found, want=5)
    time.sleep(0.3)
    # Another client on the same file (as another process would be), writing later.
    other_transport = ScriptedTransport().enqueue("hi")
    with chatledger.Client(store=str(db_path), transport=other_transport, actor="zoe") as other:
        chat = other.chats.create(model="m")
        chat.send_message("hello")
        chat.fork()
    follower.join(timeout=20)
    assert not follower.is_alive(), f"only {len(found)} events arrived"
    assert [e["position"] for e in found] == [1, 2, 3, 4, 5]
    assert found[-1]["type"] == "conversation_started" and found[-1]["metadata"]["actor"] == "zoe"
    assert [e["sse_id"] for e in found] == ["1", "2", "3", "4", "5"]


def test_following_one_conversation_resumes_after_last_event_id(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("a").enqueue("b").enqueue("c")
    one = create(served)["conversation_id"]
    other = create(served)["conversation_id"]
    send(served, one, "x")
    send(served, other, "y")
    found: list[dict[str, Any]] = []
    follower = _follow(served, f"/api/conversations/{one}/events/stream?after_version=2", found, 3)
    time.sleep(0.3)
    send(served, one, "z")
    follower.join(timeout=20)
    assert [e["version"] for e in found] == [3, 4, 5]
    assert {e["conversation_id"] for e in found} == {one}
    # Reconnecting with the last id seen resumes after it (SSE ids are positions).
    resumed: list[dict[str, Any]] = []
    again = _follow(
        served,
        f"/api/conversations/{one}/events/stream",
        resumed,
        2,
        headers={"Last-Event-ID": found[0]["sse_id"]},
    )
    again.join(timeout=20)
    assert [e["version"] for e in resumed] == [4, 5]


def test_fork_rewind_tree_and_diff(served: Served, scripted: ScriptedTransport) -> None:
    scripted.enqueue("a cat").enqueue("a dog").enqueue("a hamster")
    cid = create(served)["conversation_id"]
    send(served, cid, "name a cat")
    send(served, cid, "name a dog")
    fork = served.api_post(f"/api/conversations/{cid}/fork", {"turn": 1})
    assert fork.status_code == 201, fork.text
    fid = fork.json()["conversation_id"]
    assert fork.json()["parent"]["conversation_id"] == cid and fork.json()["turns"] == 1
    send(served, fid, "name a hamster")

    tree = served.http.get(f"/api/conversations/{fid}/tree").json()
    assert tree["root"] == cid
    assert [(n["conversation_id"], n["depth"]) for n in tree["nodes"]] == [(cid, 0), (fid, 1)]
    assert tree["nodes"][1]["divergence"] == "name a hamster"

    diff = served.http.get("/api/diff", params={"a": cid, "b": fid}).json()
    assert diff["common"] == 2
    assert diff["a_rest"][0]["parts"][0]["text"] == "name a dog"
    assert diff["b_rest"][0]["parts"][0]["text"] == "name a hamster"

    rewound = served.api_post(f"/api/conversations/{cid}/rewind")
    assert rewound.status_code == 200, rewound.text
    assert rewound.json()["removed"][0]["parts"][0]["text"] == "name a dog"
    assert rewound.json()["conversation"]["turns"] == 1
    assert served.client.store.read(cid)[-1].type == "turn_rewound"
    at = served.api_post(f"/api/conversations/{cid}/fork", {"at": 1, "model": "other-model"})
    assert at.json()["model"] == "other-model" and at.json()["turns"] == 0


def test_verify_reports_a_changed_event(served: Served, scripted: ScriptedTransport) -> None:
    import sqlite3

    scripted.enqueue("fine")
    cid = create(served)["conversation_id"]
    send(served, cid, "hello")
    good = served.http.get(f"/api/conversations/{cid}/verify").json()
    assert good["ok"] is True and good["events_checked"] == 4 and good["checkpoint"] is None
    store_report = served.http.get("/api/verify").json()
    assert store_report["ok"] is True and store_report["conversations_checked"] == 1

    with sqlite3.connect(served.client.store.location.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            "UPDATE events SET data = replace(data, 'hello', 'HELLO') "
            "WHERE conversation_id = ? AND version = 2",
            (cid,),
        )
    bad = served.http.get(f"/api/conversations/{cid}/verify").json()
    assert bad["ok"] is False
    assert bad["problems"][0]["version"] == 2
    assert "hash mismatch" in bad["problems"][0]["reason"]
    assert served.http.get("/api/verify").json()["ok"] is False


def test_export_downloads_lines_that_import_elsewhere(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("one").enqueue("two")
    cid = create(served)["conversation_id"]
    send(served, cid, "a")
    fid = served.api_post(f"/api/conversations/{cid}/fork").json()["conversation_id"]
    send(served, fid, "b")
    response = served.http.get(f"/api/conversations/{cid}/export?forks=true")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert len(lines) == 4 + 4
    target = chatledger.MemoryStore()
    report = import_lines(target, lines)
    assert sorted(report.conversations) == sorted([cid, fid])
    assert target.verify().ok


def test_errors_are_json_with_the_library_s_message(served: Served) -> None:
    missing = served.http.get("/api/conversations/no-such-id")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFoundError"
    assert "no conversation 'no-such-id'" in missing.json()["error"]["message"]

    cid = create(served)["conversation_id"]
    bad_message = send(served, cid, {"role": "user", "parts": [{"nonsense": 1}]})
    assert bad_message.status_code == 400, bad_message.text
    assert bad_message.json()["error"]["type"] == "InvalidInputError"
    assert stream_version(served.client.store, cid) == 1  # nothing was recorded

    bad_config = served.api_post(
        "/api/conversations", {"model": "m", "config": {"temperature": "hot"}}
    )
    assert bad_config.status_code == 400
    assert bad_config.json()["error"]["type"] == "InvalidInputError"

    unknown_field = served.api_post(
        "/api/conversations", {"model": "m", "secret_field": "s3cr3t-x"}
    )
    assert unknown_field.status_code == 400
    assert "s3cr3t-x" not in unknown_field.text  # validation errors do not echo input

    not_json = served.http.post(
        "/api/conversations", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and "error" in not_json.json()

    route = served.http.get("/api/nothing-here")
    assert route.status_code == 404 and route.json()["error"]["type"] == "NotFound"
    method = served.http.delete(f"/api/conversations/{cid}")
    assert method.status_code == 405 and method.json()["error"]["type"] == "MethodNotAllowed"
    for response in (missing, bad_message, bad_config, unknown_field, not_json, route, method):
        assert "Traceback" not in response.text


def test_a_model_error_is_502_with_the_server_s_words_and_no_key(
    gemini_server: GeminiServer, db_path: Any
) -> None:
    gemini_server.reply_error(429, "RESOURCE_EXHAUSTED", f"quota exceeded for key {API_KEY}")
    with (
        chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": gemini_server.base_url},
            store=str(db_path),
            actor="tester",
        ) as client,
        serve_in_thread(client) as served,
    ):
        cid = create(served)["conversation_id"]
        response = send(served, cid, "hello")
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "ClientError" and error["upstream_code"] == 429
        assert "quota exceeded" in error["message"]
        assert API_KEY not in response.text
        failed = [e for e in client.store.read(cid) if e.type == "model_call_failed"]
        assert len(failed) == 1


def test_the_gemini_protocol_end_to_end(gemini_server: GeminiServer, db_path: Any) -> None:
    gemini_server.reply_text("Hello from Gemini")
    gemini_server.reply_sse(
        [
            text_response("Str", finish_reason=None),
            text_response("eamed", finish_reason=None),
            text_response("!", finish_reason="STOP"),
        ]
    )
    with (
        chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": gemini_server.base_url},
            store=str(db_path),
        ) as client,
        serve_in_thread(client, ServeSettings(actor="api-user")) as served,
    ):
        cid = create(served)["conversation_id"]
        assert send(served, cid, "hi").json()["text"] == "Hello from Gemini"
        events = stream(served, cid, "stream please")
        assert [kind for kind, _ in events] == ["chunk", "chunk", "chunk", "done"]
        assert events[-1][1]["text"] == "Streamed!"
        assert gemini_server.requests[1].streamed
        assert {e.actor for e in client.store.read(cid)} == {"api-user"}


@pytest.fixture
def gated(gemini_server: GeminiServer) -> Iterator[list[threading.Event]]:
    gates = [threading.Event() for _ in range(3)]
    gemini_server.reply_sse(
        [
            text_response("one ", finish_reason=None),
            text_response("two ", finish_reason=None),
            text_response("three", finish_reason="STOP"),
        ],
        gates=dict(enumerate(gates)),
    )
    yield gates
    for gate in gates:
        gate.set()


def test_a_reply_is_recorded_whole_when_the_client_goes_away(
    gemini_server: GeminiServer, gated: list[threading.Event], db_path: Any
) -> None:
    with (
        chatledger.Client(
            api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
        ) as client,
        serve_in_thread(client) as served,
    ):
        cid = create(served)["conversation_id"]
        gated[0].set()
        with served.http.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"message": "go", "stream": True}
        ) as response:
            first = next(sse_events(response.iter_lines()))
            assert first[0] == "chunk"
        # The client has gone; the model goes on and the send is recorded whole.
        gated[1].set()
        gated[2].set()
        deadline = time.monotonic() + 20
        while stream_version(client.store, cid) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        chat = client.chats.get(cid)
        assert text_of(chat.get_history()[-1]) == "one two three"


def test_too_many_sends_at_once_is_503(
    gemini_server: GeminiServer, gated: list[threading.Event], db_path: Any
) -> None:
    with (
        chatledger.Client(
            api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=str(db_path)
        ) as client,
        serve_in_thread(client, ServeSettings(max_sends=1)) as served,
    ):
        cid = create(served)["conversation_id"]
        other = create(served)["conversation_id"]
        results: list[int] = []
        sending = threading.Thread(
            target=lambda: results.append(send(served, cid, "slow", stream=True).status_code)
        )
        sending.start()
        deadline = time.monotonic() + 10
        while not gemini_server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = send(served, other, "me too")
        assert busy.status_code == 503
        assert busy.json()["error"]["type"] == "SendsBusyError"
        for gate in gated:
            gate.set()
        sending.join(timeout=20)
        assert results == [200]
        assert stream_version(client.store, other) == 1


def test_a_conversation_busy_with_another_turn_is_409(
    gemini_server: GeminiServer, gated: list[threading.Event], db_path: Any
) -> None:
    with (
        chatledger.Client(
            api_key=API_KEY,
            http_options={"base_url": gemini_server.base_url},
            store=str(db_path),
            busy_timeout=0.2,
        ) as client,
        serve_in_thread(client) as served,
    ):
        cid = create(served)["conversation_id"]
        first: list[int] = []
        sending = threading.Thread(
            target=lambda: first.append(send(served, cid, "first", stream=True).status_code)
        )
        sending.start()
        deadline = time.monotonic() + 10
        while not gemini_server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        # The first turn is open (its model call is waiting): a second send must wait,
        # then give up with the library's error.
        second = send(served, cid, "second")
        assert second.status_code == 409, second.text
        assert second.json()["error"]["type"] == "ConversationBusyError"
        for gate in gated:
            gate.set()
        sending.join(timeout=20)
        assert first == [200]
        texts = [text_of(c) for c in client.chats.get(cid).get_history()]
        assert texts == ["first", "one two three"]
