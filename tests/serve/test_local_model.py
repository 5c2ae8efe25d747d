"""One streamed chat through the server on the real offline model (SmolLM2 in process),
and the chat page streaming it in the browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import chatledger
from chatledger.events import ModelCallStarted
from tests.support.narrow import text_of

from .browser import chromium
from .support import serve_in_thread, sse_events

pytestmark = pytest.mark.local_model

CONFIG = {"max_output_tokens": 24, "temperature": 0.0}


def test_a_streamed_chat_on_the_local_model(tmp_path: Path) -> None:
    client = chatledger.Client(store=str(tmp_path / "local.db"), actor="local-user")
    with client, serve_in_thread(client) as served:
        created = served.api_post("/api/conversations", {"model": "local", "config": CONFIG})
        assert created.status_code == 201, created.text
        cid = created.json()["conversation_id"]
        with served.http.stream(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"message": "What is the capital of France?", "stream": True},
            timeout=300,
        ) as response:
            assert response.status_code == 200
            events = [
                (kind, json.loads(data)) for kind, data, _ in sse_events(response.iter_lines())
            ]
        chunks = [data["text"] for kind, data in events if kind == "chunk"]
        assert len(chunks) > 1, "the model's tokens arrive one by one"
        assert events[-1][0] == "done"
        done = events[-1][1]
        assert done["text"] == "".join(chunks) and done["text"].strip()
        chat = client.chats.get(cid)
        assert text_of(chat.get_history()[-1]) == done["text"]
        called = [e.data for e in chat.events() if isinstance(e.data, ModelCallStarted)]
        assert called[0].transport == "local" and called[0].streamed
        assert chat.verify().ok

        # The chat page streams the same model in a real browser.
        with chromium() as driver:
            driver.get(f"{served.base_url}/c/{cid}/chat")
            driver.find_element(By.ID, "message").send_keys("And of Italy?")
            driver.find_element(By.ID, "send").click()
            reply = WebDriverWait(driver, 60).until(
                lambda d: d.find_element(By.CSS_SELECTOR, ".reply")
            )
            WebDriverWait(driver, 300).until(lambda d: reply.get_attribute("data-done") == "true")
            assert int(reply.get_attribute("data-chunks") or "0") > 1
            text = reply.find_element(By.CSS_SELECTOR, ".part").text
        history = client.chats.get(cid).get_history()
        assert len(history) == 4 and text_of(history[2]) == "And of Italy?"
        assert text.strip()  # the reply, rendered from its Markdown
