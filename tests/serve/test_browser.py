"""The pages in a real browser: headless Chromium (Debian's package) driven by selenium
against a running server. These fail, never skip, when Chromium is missing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

import chatledger
from tests.conftest import API_KEY
from tests.support.gemini_server import GeminiServer, text_response
from tests.support.narrow import stream_version, text_of

from .browser import chromium
from .demo import Demo, build_demo
from .hostile import PAYLOAD, build_hostile
from .screenshots import take
from .support import Served, serve_in_thread


@pytest.fixture(scope="module")
def model_server() -> Iterator[GeminiServer]:
    with GeminiServer() as server:
        yield server


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, model_server: GeminiServer
) -> Iterator[tuple[Served, Demo, dict[str, str]]]:
    db = str(tmp_path_factory.mktemp("browser") / "browser.db")
    demo = build_demo(db)
    hostile = build_hostile(db)
    client = chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": model_server.base_url},
        store=db,
        actor="browser-user",
    )
    with client, serve_in_thread(client) as served:
        yield served, demo, hostile


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with chromium() as browser:
        yield browser


def wait(driver: WebDriver, condition: Any, timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def by_id(driver: WebDriver, element_id: str) -> Any:
    return wait(driver, lambda d: d.find_element(By.ID, element_id))


def no_script_ran(driver: WebDriver) -> None:
    assert driver.execute_script("return window.__xss === undefined"), "a payload ran"
    assert driver.title != "pwned"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when there is no dialog


def test_the_pages_render_what_the_log_holds(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver
) -> None:
    served, demo, _ = site
    base = served.base_url
    driver.get(base + "/")
    rows = by_id(driver, "conversations").find_elements(By.CSS_SELECTOR, "tbody tr")
    titles = [row.find_element(By.CSS_SELECTOR, "a.title").text for row in rows]
    assert "My order #1042 hasn't arrived. Can you check where it is?" in titles
    assert "Actually, please cancel it." in titles

    driver.get(f"{base}/c/{demo.support}?view=full")
    history = by_id(driver, "history")
    strong = history.find_elements(By.CSS_SELECTOR, ".role-model .markdown strong")
    assert [s.text for s in strong][:2] == ["#1042", "expedite"]
    assert history.find_elements(By.CSS_SELECTOR, ".markdown table td")
    steps = history.find_elements(By.CSS_SELECTOR, ".function-call summary")
    assert "lookup_order" in steps[0].text
    turns = by_id(driver, "turns").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(turns) == 2
    assert "ServerError 503" in turns[1].text and "bob" in turns[1].text

    driver.get(f"{base}/c/{demo.support}/events")
    rows = by_id(driver, "timeline").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 13
    failed = driver.find_element(By.CSS_SELECTOR, "tr.type-model_call_failed")
    failed.find_element(By.TAG_NAME, "summary").click()
    assert '"status": "UNAVAILABLE"' in failed.find_element(By.TAG_NAME, "pre").text
    driver.find_element(By.CSS_SELECTOR, "input[value=function_called]").click()
    driver.find_element(By.CSS_SELECTOR, "#type-filter button").click()
    wait(driver, lambda d: "type=function_called" in d.current_url)
    rows = by_id(driver, "timeline").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1 and "lookup_order" in rows[0].text

    driver.get(f"{base}/c/{demo.support}/audit")
    assert by_id(driver, "verdict").text.startswith("No problems found")
    assert "signed checkpoint" in by_id(driver, "checkpoint").text
    head = driver.find_element(By.ID, "head-hash").text
    assert head == served.client.store.read(demo.support)[-1].hash


def test_the_branch_tree_and_the_side_by_side_diff(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver
) -> None:
    served, demo, _ = site
    driver.get(f"{served.base_url}/c/{demo.fork}/tree")
    tree = by_id(driver, "fork-tree")
    nodes = tree.find_elements(By.CSS_SELECTOR, "a.node")
    assert [n.get_attribute("data-conversation") for n in nodes] == [demo.support, demo.fork]
    assert "current" in nodes[1].get_attribute("class")
    assert tree.find_elements(By.CSS_SELECTOR, "path.edge")
    assert "Actually, please cancel it." in nodes[1].text
    driver.find_element(By.CSS_SELECTOR, "#compare button").click()
    table = by_id(driver, "diff")
    assert "share their first 4 contents" in driver.find_element(By.ID, "diff-summary").text
    left, right = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0].find_elements(
        By.TAG_NAME, "td"
    )
    assert "Actually, please cancel it." in left.text
    assert "Can you expedite it, please?" in right.text
    # Each node opens its branch.
    driver.get(f"{served.base_url}/c/{demo.fork}/tree")
    by_id(driver, "fork-tree").find_elements(By.CSS_SELECTOR, "a.node")[0].click()
    wait(driver, lambda d: d.current_url.endswith(f"/c/{demo.support}"))


def test_the_time_travel_slider_shows_an_earlier_history(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver
) -> None:
    served, demo, _ = site
    driver.get(f"{served.base_url}/c/{demo.support}")
    before = len(by_id(driver, "history").find_elements(By.CSS_SELECTOR, ".content"))
    assert before == 4
    slider = driver.find_element(By.ID, "as-of")
    driver.execute_script(
        "arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'));"
        "arguments[0].dispatchEvent(new Event('change'));",
        slider,
    )
    wait(driver, lambda d: "as_of=2" in d.current_url)
    assert "as of version 2" in by_id(driver, "as-of-notice").text
    contents = by_id(driver, "history").find_elements(By.CSS_SELECTOR, ".content")
    assert len(contents) == 0 or "My order #1042" in contents[0].text
    driver.get(f"{served.base_url}/c/{demo.support}?as_of=8")
    contents = by_id(driver, "history").find_elements(By.CSS_SELECTOR, ".content")
    assert len(contents) == 2 and "#1042" in contents[1].text


def _new_chat(driver: WebDriver, served: Served) -> str:
    driver.get(served.base_url + "/")
    model = driver.find_element(By.CSS_SELECTOR, "section.new input[name=model]")
    model.clear()
    model.send_keys("gemini-2.5-flash")
    driver.find_element(By.CSS_SELECTOR, "section.new button").click()
    by_id(driver, "send-form")
    return str(driver.current_url.split("/c/")[1].split("/")[0])


def test_a_streamed_reply_arrives_token_by_token(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver, model_server: GeminiServer
) -> None:
    served, _, _ = site
    cid = _new_chat(driver, served)
    gates = [threading.Event() for _ in range(3)]
    model_server.reply_sse(
        [
            text_response("Streaming ", finish_reason=None),
            text_response("one token ", finish_reason=None),
            text_response("at a **time**.", finish_reason="STOP"),
        ],
        gates=dict(enumerate(gates)),
    )
    try:
        driver.find_element(By.ID, "message").send_keys("Stream something")
        driver.find_element(By.ID, "send").click()
        reply = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".reply"))
        seen = []
        for gate, expected in zip(gates[:2], ("Streaming ", "Streaming one token "), strict=True):
            gate.set()
            try:
                wait(
                    driver,
                    lambda d, e=expected: (
                        reply.find_element(By.CSS_SELECTOR, ".part").text.strip() == e.strip()
                    ),
                )
            except Exception:
                raise AssertionError(
                    f"{reply.text!r} {driver.find_element(By.ID, 'send-status').text!r}"
                ) from None
            assert reply.get_attribute("data-done") is None  # still streaming
            seen.append(reply.get_attribute("data-chunks"))
        assert seen == ["1", "2"]  # two DOM updates before the end
        gates[2].set()
        wait(driver, lambda d: reply.get_attribute("data-done") == "true")
        assert reply.get_attribute("data-chunks") == "3"
        assert reply.find_element(By.CSS_SELECTOR, ".markdown strong").text == "time"
        assert "recorded at version 4" in driver.find_element(By.ID, "send-status").text
    finally:
        for gate in gates:
            gate.set()
    history = served.client.chats.get(cid).get_history()
    assert text_of(history[-1]) == "Streaming one token at a **time**."
    assert {e.actor for e in served.client.store.read(cid)} == {"browser-user"}


def test_fork_and_rewind_from_the_chat_page(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver, model_server: GeminiServer
) -> None:
    served, _, _ = site
    cid = _new_chat(driver, served)
    model_server.reply_sse([text_response("first answer")])
    driver.find_element(By.ID, "message").send_keys("first question")
    driver.find_element(By.ID, "send").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".reply").get_attribute("data-done"))
    driver.get(f"{served.base_url}/c/{cid}/chat")
    driver.find_element(By.ID, "fork").click()
    wait(driver, lambda d: cid not in d.current_url and d.current_url.endswith("/chat"))
    assert f"forked from {cid[:8]}" in driver.find_element(By.CSS_SELECTOR, ".meta").text
    fork_id = driver.current_url.split("/c/")[1].split("/")[0]
    parent = served.client.chats.get(fork_id).parent
    assert parent is not None and parent.conversation_id == cid
    driver.get(f"{served.base_url}/c/{cid}/chat")
    driver.find_element(By.ID, "rewind").click()
    wait(driver, lambda d: d.find_element(By.ID, "rewind").get_attribute("disabled") is not None)
    assert served.client.store.read(cid)[-1].type == "turn_rewound"
    assert served.client.chats.get(cid).get_history() == []


def test_no_payload_ever_runs(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver, model_server: GeminiServer
) -> None:
    served, _, hostile = site
    chat, fork = quote(hostile["chat"]), quote(hostile["fork"])
    for path in (
        "/",
        f"/?q={quote('script')}",
        f"/c/{chat}?view=full",
        f"/c/{chat}?view=curated",
        f"/c/{chat}/events",
        f"/c/{chat}/tree",
        f"/diff?a={chat}&b={fork}",
        f"/c/{chat}/audit",
        f"/c/{fork}/chat",
        f"/c/{quote(PAYLOAD[:100], safe='')}",
    ):
        driver.get(served.base_url + path)
        wait(driver, lambda d: d.find_element(By.TAG_NAME, "main"))
        for details in driver.find_elements(By.TAG_NAME, "details"):
            driver.execute_script("arguments[0].open = true", details)
        time.sleep(0.2)  # handlers such as onerror and ontoggle run asynchronously
        no_script_ran(driver)
        # The payload is shown as text, not dropped.
        if not path.endswith("/audit"):
            assert "window.__xss" in driver.find_element(By.TAG_NAME, "main").text, path
    # A payload streamed into the chat page, chunk by chunk, then rendered.
    cid = _new_chat(driver, served)
    model_server.reply_sse(
        [
            text_response(PAYLOAD[:60], finish_reason=None),
            text_response(PAYLOAD[60:], finish_reason="STOP"),
        ]
    )
    driver.find_element(By.ID, "message").send_keys(PAYLOAD.replace("\n", " "))
    driver.find_element(By.ID, "send").click()
    reply = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".reply"))
    wait(driver, lambda d: reply.get_attribute("data-done") == "true")
    time.sleep(0.2)
    no_script_ran(driver)
    assert stream_version(served.client.store, cid) == 4


def test_our_script_runs_under_the_content_security_policy(
    site: tuple[Served, Demo, dict[str, str]], driver: WebDriver
) -> None:
    served, demo, _ = site
    driver.get(f"{served.base_url}/c/{demo.support}")
    # The script loaded (it marks the page) and the CSP let it: the Show button is
    # hidden because the slider submits by itself.
    assert driver.execute_script("return document.documentElement.classList.contains('js')")
    button = driver.find_element(By.CSS_SELECTOR, "#time-travel button")
    assert not button.is_displayed()
    # An inline script is refused by the policy.
    driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
        "document.body.appendChild(s);"
    )
    assert driver.execute_script("return window.__inline === undefined")


def test_screenshots_of_the_main_pages(tmp_path: Path) -> None:
    saved = take(tmp_path)
    assert [path.name for path in saved] == [
        "conversations.png",
        "conversation.png",
        "timeline.png",
        "branches.png",
        "side-by-side.png",
        "time-travel.png",
        "audit.png",
        "chat.png",
    ]
    for path in saved:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
