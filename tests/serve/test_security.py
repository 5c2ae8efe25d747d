"""The server's security rules, each against a running server: binding, tokens, who is
recorded, CSRF, read-only mode, body limits, the Host check and response headers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import InvalidInputError
from chatledger.serve.settings import (
    ServeSettings,
    TokenTable,
    is_loopback_host,
    load_token_file,
    parse_token,
)

from .conftest import ALICE_TOKEN, BOB_TOKEN, bearer
from .support import Served, csrf_of, serve_in_thread


def events(served: Served) -> int:
    return sum(info.version for info in served.client.store.conversations())


def new_conversation(served: Served, headers: Any = None) -> str:
    response = served.api_post("/api/conversations", {"model": "m"}, headers=headers or {})
    assert response.status_code == 201, response.text
    cid: str = response.json()["conversation_id"]
    return cid


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_binding_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(
        InvalidInputError, match=r"refusing to serve on 0\.0\.0\.0 without an access"
    ):
        ServeSettings(bind_host="0.0.0.0")
    settings = ServeSettings(bind_host="0.0.0.0", tokens=TokenTable([("a", ALICE_TOKEN)]))
    assert settings.host_names() == ["*"]  # tokens protect it; the Host check cannot
    assert "127.0.0.1" in ServeSettings().host_names()
    named = ServeSettings(
        bind_host="0.0.0.0",
        tokens=TokenTable([("a", ALICE_TOKEN)]),
        allowed_hosts=("Chat.Example",),
    )
    assert named.host_names() == ["localhost", "127.0.0.1", "::1", "[::1]", "chat.example"]
    assert "[::1]" in ServeSettings(bind_host="::1").host_names()


def test_tokens_are_checked_and_kept_as_digests(tmp_path: Path) -> None:
    assert parse_token(f"alice={ALICE_TOKEN}") == ("alice", ALICE_TOKEN)
    with pytest.raises(InvalidInputError, match="16 to 512 characters") as short:
        parse_token("alice=short-secret")
    assert "short-secret" not in str(short.value)
    with pytest.raises(InvalidInputError, match="NAME=TOKEN"):
        parse_token(ALICE_TOKEN)
    with pytest.raises(InvalidInputError, match="without spaces"):
        parse_token("alice=" + "x" * 10 + " " + "y" * 10)
    with pytest.raises(InvalidInputError, match="each actor needs a token of its own"):
        TokenTable([("alice", ALICE_TOKEN), ("bob", ALICE_TOKEN)])
    table = TokenTable([("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)])
    assert table.identify(ALICE_TOKEN) == "alice" and table.identify(BOB_TOKEN) == "bob"
    assert table.identify(ALICE_TOKEN + "x") is None and table.identify("") is None
    assert ALICE_TOKEN not in repr(table) and ALICE_TOKEN not in repr(vars(table))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may use it\nalice={ALICE_TOKEN}\n\n  bob = {BOB_TOKEN}  \n")
    assert load_token_file(tokens) == [("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)]
    tokens.write_text("alice=tiny\n")
    with pytest.raises(InvalidInputError, match="line 1"):
        load_token_file(tokens)


def test_the_server_listens_on_loopback_only(tmp_path: Path) -> None:
    client = chatledger.Client(store=str(tmp_path / "l.db"), transport=ScriptedTransport())
    with client, serve_in_thread(client) as served:
        port = int(served.base_url.rsplit(":", 1)[1])
        assert httpx.get(served.base_url + "/api/health").json()["ok"] is True
        hosts = {
            str(info[4][0])  # an IPv4 address (AF_INET)
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        }
        addresses = {host for host in hosts if not host.startswith("127.")}
        for address in addresses:
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
                pass


# --------------------------------------------------------------------------- tokens


def test_api_requests_need_a_valid_bearer_token(
    token_served: Served, scripted: ScriptedTransport
) -> None:
    http = token_served.http
    missing = http.get("/api/conversations")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer TOKEN" in missing.json()["error"]["message"]
    wrong = http.get("/api/conversations", headers=bearer("not-a-token-but-long-enough"))
    assert wrong.status_code == 401 and "not-a-token" not in wrong.text
    basic = http.get("/api/conversations", headers={"Authorization": f"Basic {ALICE_TOKEN}"})
    assert basic.status_code == 401 and ALICE_TOKEN not in basic.text
    assert http.get("/api/conversations", headers=bearer(ALICE_TOKEN)).status_code == 200
    # A query-string token is not a way in (it would end up in access logs).
    assert http.get(f"/api/conversations?token={ALICE_TOKEN}").status_code == 401


def test_every_event_records_the_actor_of_the_request_s_token(
    token_served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("hi alice").enqueue("hi bob")
    cid = new_conversation(token_served, bearer(ALICE_TOKEN))
    for token in (ALICE_TOKEN, BOB_TOKEN):
        response = token_served.api_post(
            f"/api/conversations/{cid}/messages", {"message": "hello"}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
    fork = token_served.api_post(f"/api/conversations/{cid}/fork", headers=bearer(BOB_TOKEN))
    actors = [event.actor for event in token_served.client.store.read(cid)]
    assert actors == ["alice"] * 4 + ["bob"] * 3
    fork_events = token_served.client.store.read(fork.json()["conversation_id"])
    assert [event.actor for event in fork_events] == ["bob"]
    # The client's own actor ("tester") is never used when tokens decide.
    assert "tester" not in {e.actor for e in token_served.client.store.read_all()}


def test_without_tokens_the_server_s_actor_is_recorded(db_path: Path) -> None:
    client = chatledger.Client(store=str(db_path), transport=ScriptedTransport(), actor="os-user")
    with client, serve_in_thread(client, ServeSettings(actor="operator")) as served:
        cid = new_conversation(served)
        assert [e.actor for e in client.store.read(cid)] == ["operator"]
    with (
        chatledger.Client(store=str(db_path), transport=ScriptedTransport()) as plain,
        serve_in_thread(plain) as served,
    ):
        cid = new_conversation(served)
        assert [e.actor for e in plain.store.read(cid)] == [plain.actor]


def test_the_api_ignores_the_page_session_cookie(token_served: Served) -> None:
    login = token_served.http.get("/login")
    token_served.http.post(
        "/login",
        data={"csrf": csrf_of(login.text), "token": ALICE_TOKEN, "next": "/"},
        headers={"Origin": token_served.base_url},
    )
    assert token_served.http.get("/").status_code == 200  # the session works for pages
    assert token_served.http.cookies  # and the client holds its cookie
    assert token_served.http.get("/api/conversations").status_code == 401


def test_pages_ask_for_a_token_once(token_served: Served, scripted: ScriptedTransport) -> None:
    http = token_served.http
    first = http.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    form = http.get("/login")
    bad = http.post(
        "/login",
        data={"csrf": csrf_of(form.text), "token": "wrong-token-0000000000", "next": "/"},
        headers={"Origin": token_served.base_url},
    )
    assert bad.status_code == 401 and "wrong-token" not in bad.text
    good = http.post(
        "/login",
        data={"csrf": csrf_of(form.text), "token": BOB_TOKEN, "next": "//evil.example/"},
        headers={"Origin": token_served.base_url},
    )
    assert good.status_code == 303 and good.headers["location"] == "/"  # never off-site
    # Signing in gave a new session id (a planted one is worth nothing).
    assert good.cookies != form.cookies
    page = http.get("/")
    assert page.status_code == 200 and ">bob<" in page.text
    scripted.enqueue("hello bob")
    created = http.post(
        "/new",
        data={"csrf": csrf_of(page.text), "model": "m"},
        headers={"Origin": token_served.base_url},
    )
    assert created.status_code == 303
    cid = created.headers["location"].split("/")[2]
    assert [e.actor for e in token_served.client.store.read(cid)] == ["bob"]
    logout = http.post(
        "/logout", data={"csrf": csrf_of(page.text)}, headers={"Origin": token_served.base_url}
    )
    assert logout.status_code == 303
    assert http.get("/").status_code == 303


# --------------------------------------------------------------------------- CSRF


def test_page_forms_need_the_session_s_csrf_token(
    served: Served, scripted: ScriptedTransport
) -> None:
    scripted.enqueue("one")
    cid = new_conversation(served)
    served.api_post(f"/api/conversations/{cid}/messages", {"message": "hi"})
    page = served.http.get(f"/c/{cid}/chat")
    token = csrf_of(page.text)
    before = events(served)
    origin = {"Origin": served.base_url}
    refused = [
        served.http.post(f"/c/{cid}/rewind", data={}, headers=origin),
        served.http.post(f"/c/{cid}/rewind", data={"csrf": "forged"}, headers=origin),
        served.http.post(
            f"/c/{cid}/rewind", data={"csrf": token}, headers={"Origin": "http://evil.example"}
        ),
        served.http.post(
            f"/c/{cid}/rewind", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
        ),
        served.http.post(f"/c/{cid}/rewind", data={"csrf": token}, headers={"Origin": "null"}),
        # Another session's token is no good either.
        httpx.post(
            f"{served.base_url}/c/{cid}/rewind", data={"csrf": token}, headers=origin, timeout=10
        ),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert "Traceback" not in response.text
    assert events(served) == before  # nothing was written
    done = served.http.post(f"/c/{cid}/rewind", data={"csrf": token}, headers=origin)
    assert done.status_code == 303
    assert served.client.store.read(cid)[-1].type == "turn_rewound"


def test_api_writes_without_tokens_must_be_same_site_json(served: Served) -> None:
    before = events(served)
    form = served.http.post("/api/conversations", data={"model": "m"})
    assert form.status_code == 415 and form.json()["error"]["type"] == "UnsupportedMediaType"
    plain = served.http.post(
        "/api/conversations", content=b'{"model": "m"}', headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    cross = served.api_post(
        "/api/conversations", {"model": "m"}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403 and cross.json()["error"]["type"] == "CrossSiteRequest"
    fetch = served.api_post(
        "/api/conversations", {"model": "m"}, headers={"Sec-Fetch-Site": "same-site"}
    )
    assert fetch.status_code == 403
    assert events(served) == before
    same = served.api_post(
        "/api/conversations", {"model": "m"}, headers={"Origin": served.base_url}
    )
    assert same.status_code == 201


# --------------------------------------------------------------------------- read-only


def _write_requests(served: Served, cid: str, csrf: str) -> list[tuple[str, str, Any]]:
    """One request for every route that is not a GET (the app's own route table)."""
    from chatledger.serve.api import router as api_router
    from chatledger.serve.pages import router as page_router

    requests = []
    for route in [*api_router.routes, *page_router.routes]:
        if not isinstance(route, APIRoute):
            continue
        for method in (route.methods or set()) - {"GET", "HEAD"}:
            path = route.path.replace("{conversation_id}", cid)
            if path in ("/login", "/logout"):
                continue  # they change no log
            requests.append((method, path, route))
    return requests


def test_read_only_refuses_every_write(db_path: Path, scripted: ScriptedTransport) -> None:
    scripted.enqueue("kept")
    with chatledger.Client(store=str(db_path), transport=scripted) as writer:
        chat = writer.chats.create(model="m")
        chat.send_message("hello")
    client = chatledger.Client(store=str(db_path), transport=scripted, actor="ro")
    with client, serve_in_thread(client, ServeSettings(read_only=True)) as served:
        page = served.http.get(f"/c/{chat.id}/chat")
        assert "read-only" in page.text and 'id="send-form"' not in page.text
        assert 'name="csrf"' not in page.text  # no write forms at all
        csrf = "any: read-only is checked first"
        before = events(served)
        requests = _write_requests(served, chat.id, csrf)
        assert len(requests) == 8  # 4 API writes, 4 page forms: add new ones here
        for method, path, _ in requests:
            if path.startswith("/api/"):
                response = served.http.request(method, path, json={"message": "x", "model": "m"})
            else:
                response = served.http.request(
                    method,
                    path,
                    data={"csrf": csrf, "message": "x", "model": "m"},
                    headers={"Origin": served.base_url},
                )
            assert response.status_code == 403, (path, response.text)
            assert "read-only" in response.text
        assert events(served) == before
        assert served.http.get("/api/health").json()["read_only"] is True
        # Reading still works, verification included.
        assert served.http.get(f"/api/conversations/{chat.id}/verify").json()["ok"] is True


def test_reading_pages_write_nothing(served: Served, scripted: ScriptedTransport) -> None:
    scripted.enqueue("a")
    cid = new_conversation(served)
    served.api_post(f"/api/conversations/{cid}/messages", {"message": "hi"})
    before = events(served)
    for path in (
        "/",
        f"/c/{cid}",
        f"/c/{cid}/events",
        f"/c/{cid}/tree",
        f"/c/{cid}/audit",
        f"/c/{cid}/chat",
        f"/c/{cid}/export",
        "/audit?run=true",
    ):
        assert served.http.get(path).status_code in (200, 303)
    served.state.audit.wait(10)
    assert events(served) == before


# --------------------------------------------------------------------------- limits


def test_request_bodies_are_bounded(db_path: Path) -> None:
    client = chatledger.Client(store=str(db_path), transport=ScriptedTransport())
    with client, serve_in_thread(client, ServeSettings(max_body=4096)) as served:
        cid = new_conversation(served)
        before = events(served)
        big = served.api_post(f"/api/conversations/{cid}/messages", {"message": "x" * 10_000})
        assert big.status_code == 413
        assert big.json()["error"]["type"] == "RequestTooLarge"

        def chunked() -> Any:
            yield b'{"message": "'
            for _ in range(20):
                yield b"y" * 500
            yield b'"}'

        streamed = served.http.post(
            f"/api/conversations/{cid}/messages",
            content=chunked(),
            headers={"Content-Type": "application/json"},
        )
        assert streamed.status_code == 413, streamed.text
        page = served.http.get(f"/c/{cid}/chat")
        form = served.http.post(
            f"/c/{cid}/send",
            data={"csrf": csrf_of(page.text), "message": "z" * 10_000},
            headers={"Origin": served.base_url},
        )
        assert form.status_code == 413
        assert events(served) == before


def test_the_host_header_must_name_this_server(served: Served) -> None:
    port = served.base_url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]"):
        response = served.http.get("/api/health", headers={"Host": host})
        assert response.status_code == 400, host
        assert response.json()["error"]["type"] == "InvalidHost"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert served.http.get("/api/health", headers={"Host": host}).status_code == 200


def test_security_headers_on_pages_and_api(served: Served) -> None:
    for path in ("/", "/api/health", "/nope"):
        headers = served.http.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"


def test_a_damaged_log_is_a_json_error_without_a_traceback(
    served: Served, scripted: ScriptedTransport
) -> None:
    import sqlite3

    scripted.enqueue("a")
    cid = new_conversation(served)
    served.api_post(f"/api/conversations/{cid}/messages", {"message": "hi"})
    with sqlite3.connect(served.client.store.location.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute('UPDATE events SET data = \'{"turn": "x"}\' WHERE version = 2')
        # The read models are a cache of what the log held when it was written (verify
        # names the damage); without them a read folds the log and meets the damage.
        conn.execute("DELETE FROM chat_contents WHERE conversation_id = ?", (cid,))
        conn.execute("DELETE FROM chat_summaries WHERE conversation_id = ?", (cid,))
    response = served.http.get(f"/api/conversations/{cid}/history")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "IntegrityError" and "run verify" in error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    page = served.http.get(f"/c/{cid}")
    assert page.status_code == 500 and "Traceback" not in page.text
