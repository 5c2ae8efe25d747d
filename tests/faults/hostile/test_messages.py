"""Hostile input through the public API: random messages (sync, streamed, async, legacy),
histories, models, configs and per-message configs, and random ids."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import chatledger
from chatledger import legacy
from chatledger.errors import ChatledgerError
from chatledger.events import SQLiteStore
from chatledger.types import Content
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.faults.hostile.support import (
    ANY_CHARS,
    CONFIGS,
    HISTORIES,
    HOSTILE_TEXT,
    HYPOTHESIS,
    JSONISH,
    MESSAGES,
    MODEL,
    PART_OBJECTS,
    Tally,
    as_written,
    clear_replies,
    log_state,
    outcome,
    reopen,
    wires,
)
from tests.support.gemini_server import GeminiServer, text_response

# --------------------------------------------------------------------------- (a) messages


SEND_MODES = ["send", "stream", "legacy"]


def test_random_messages_are_sent_exactly_or_refused_cleanly(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """Any value as a message: either it is sent and recorded exactly as the server
    received it (and reads back the same from the log), or it is refused with a clear
    error before anything is sent or recorded."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
    @given(message=MESSAGES, mode=st.sampled_from(SEND_MODES))
    def one(message: Any, mode: str) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        session = legacy.GenerativeModel(MODEL, client=hostile).start_chat()
        chat = session._chat if mode == "legacy" else hostile.chats.create(model=MODEL)
        if mode == "stream":
            gemini_server.reply_sse([text_response("ok")])
        else:
            gemini_server.reply_echo()
        requests, before = len(gemini_server.requests), log_state(hostile.store, db_path)
        if mode == "send":
            _, error = outcome(lambda: chat.send_message(message))
        elif mode == "stream":
            _, error = outcome(lambda: list(chat.send_message_stream(message)))
        else:
            _, error = outcome(lambda: session.send_message(message))
        tally.note(error)
        if error is not None:
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"{mode} {message!r:.200}"
            )
            tally.check(
                len(gemini_server.requests) == requests, "a refused message reached the server"
            )
            return
        sent = gemini_server.requests[-1].body["contents"][-1]
        history = chat.get_history()
        tally.check(
            history[0].to_wire() == sent,
            f"recorded {history[0].to_wire()!r:.200} but sent {sent!r:.200}",
        )
        tally.check(
            wires(reopen(hostile, chat.id).get_history()) == wires(history),
            "the log reads back differently",
        )
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        if isinstance(message, str):
            tally.check(
                sent == {"role": "user", "parts": [{"text": message}]}, "a text message was changed"
            )

    one()
    tally.record("send_message/random messages")


def test_random_messages_async(gemini_server: GeminiServer, db_path: Path) -> None:
    """The async chat: the same rule (sent and recorded, or refused with nothing written)."""
    tally = Tally()
    store = SQLiteStore(db_path)

    async def send(message: Any, mode: str) -> tuple[chatledger.AsyncChat, BaseException | None]:
        client = chatledger.Client(
            api_key=API_KEY, http_options={"base_url": gemini_server.base_url}, store=store
        )
        chat = client.aio.chats.create(model=MODEL)
        try:
            if mode == "stream":
                async for _chunk in await chat.send_message_stream(message):
                    pass
            else:
                await chat.send_message(message)
            return chat, None
        except Exception as exc:
            return chat, exc
        finally:
            await client.aclose()

    @settings(HYPOTHESIS, max_examples=ledger.scale(20, 200))
    @given(message=MESSAGES, mode=st.sampled_from(["send", "stream"]))
    def one(message: Any, mode: str) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        if mode == "stream":
            gemini_server.reply_sse([text_response("ok")])
        else:
            gemini_server.reply_echo()
        requests = len(gemini_server.requests)
        before = log_state(store, db_path)
        chat, error = asyncio.run(send(message, mode))
        tally.note(error)
        if error is not None:
            after = log_state(store, db_path)
            # The chat's own conversation_started is the one event the attempt may add.
            started = [e for e in after.events if e.conversation_id == chat.id]
            tally.check(
                isinstance(error, ChatledgerError), f"async {mode} {message!r:.200}: {error!r:.300}"
            )
            tally.check(
                len(started) == 1 and after.events[: len(before.events)] == before.events,
                "the log changed",
            )
            tally.check(
                len(gemini_server.requests) == requests, "a refused message reached the server"
            )
            return
        sent = gemini_server.requests[-1].body["contents"][-1]
        tally.check(chat.get_history()[0].to_wire() == sent, "recorded is not what was sent")
        tally.check(store.verify(chat.id).ok, "the log does not verify")

    try:
        one()
    finally:
        store.close()
    tally.record("async send_message/random messages")


def test_random_histories_models_and_configs_at_create(
    hostile: chatledger.Client, db_path: Path
) -> None:
    """``chats.create`` with any model, history and config: recorded exactly (the history
    reads back as given) or refused with nothing recorded."""
    tally = Tally()

    @settings(HYPOTHESIS, max_examples=ledger.scale(80, 800))
    @given(
        model=st.one_of(st.just(MODEL), HOSTILE_TEXT, JSONISH),
        history=st.one_of(
            st.none(),
            HISTORIES,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.just("user"),
                        "parts": st.lists(PART_OBJECTS, min_size=1, max_size=2),
                    }
                ),
                max_size=2,
            ),
        ),
        config=st.one_of(st.none(), CONFIGS),
        surface=st.sampled_from(["chats", "chats", "legacy"]),
    )
    def one(model: Any, history: Any, config: Any, surface: str) -> None:
        tally.inputs += 1
        before = log_state(hostile.store, db_path)
        if surface == "legacy":
            chat, error = outcome(
                lambda: (
                    legacy.GenerativeModel(model, client=hostile, generation_config=config)
                    .start_chat(history=history)
                    ._chat
                )
            )
        else:
            chat, error = outcome(
                lambda: hostile.chats.create(model=model, history=history, config=config)
            )
        tally.note(error)
        if error is not None:
            tally.refused(
                error,
                before,
                log_state(hostile.store, db_path),
                f"create {model!r:.80} {history!r:.200} {config!r:.200}",
            )
            return
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")
        again = reopen(hostile, chat.id)
        tally.check(
            wires(again.get_history()) == wires(chat.get_history()),
            "the history reads back differently",
        )
        tally.check(
            again.model == (model.removeprefix("models/") if surface == "legacy" else model),
            "the model name changed",
        )
        if history and surface == "chats":
            given_contents = [as_written(Content.model_validate(item)) for item in history]
            tally.check(
                wires(chat.get_history()) == given_contents, "the history is not the one given"
            )
        _, config_error = outcome(lambda: again.config)
        tally.check(
            config_error is None, f"the recorded config does not read back: {config_error!r:.200}"
        )

    one()
    tally.record("chats.create/random model, history, config")


def test_random_per_message_configs(
    hostile: chatledger.Client, gemini_server: GeminiServer, db_path: Path
) -> None:
    """``send_message(..., config=<anything>)``: sent with that config, or refused cleanly."""
    tally = Tally()
    chat = hostile.chats.create(model=MODEL, config={"temperature": 0.5})

    @settings(HYPOTHESIS, max_examples=ledger.scale(50, 500))
    @given(config=CONFIGS)
    def one(config: Any) -> None:
        tally.inputs += 1
        clear_replies(gemini_server)
        gemini_server.reply_echo()
        before = log_state(hostile.store, db_path)
        _, error = outcome(lambda: chat.send_message("hello", config=config))
        tally.note(error)
        if error is not None:
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"config {config!r:.300}"
            )
            return
        tally.check(hostile.store.verify(chat.id).ok, "the log does not verify")

    one()
    tally.record("send_message/random per-message configs")


def test_random_ids_for_get_tree_and_history(hostile: chatledger.Client, db_path: Path) -> None:
    """``chats.get`` / ``chats.tree`` / ``chats.list(parent_id=)`` / ``get_history(as_of=)``
    with any value: a clear error (NotFoundError for a well-formed unknown id) and an
    unchanged log."""
    tally = Tally()
    chat = hostile.chats.create(
        model=MODEL,
        history=[
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "a"}]},
        ],
    )

    @settings(HYPOTHESIS, max_examples=ledger.scale(60, 600))
    @given(value=st.one_of(HOSTILE_TEXT, JSONISH, st.text(ANY_CHARS, min_size=150, max_size=300)))
    def one(value: Any) -> None:
        tally.inputs += 1
        before = log_state(hostile.store, db_path)
        for what, action in (
            ("get", lambda: hostile.chats.get(value)),
            ("aio.get", lambda: hostile.aio.chats.get(value)),
            ("tree", lambda: hostile.chats.tree(value)),
            ("list", lambda: hostile.chats.list(parent_id=value)),
            ("as_of", lambda: chat.get_history(as_of=value)),
            ("fork", lambda: chat.fork(at=value)),
        ):
            result, error = outcome(action)
            if what == "list" and error is None:
                tally.check(
                    value is None or result == [], "children of a conversation that does not exist"
                )
                continue
            if what in ("as_of", "fork") and error is None:
                # None means "now"; a version of the conversation is a version.
                tally.check(value is None or type(value) is int, f"{what}={value!r} was accepted")
                continue
            tally.refused(
                error, before, log_state(hostile.store, db_path), f"{what}({value!r:.100})"
            )

    one()
    tally.record("chats.get/tree/list, as_of, fork/random ids", inputs=tally.inputs * 6)
