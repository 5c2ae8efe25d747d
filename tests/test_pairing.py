"""The pairing guarantee (SEMANTICS §2, issue 4): no request ever carries a model function
call that the content right after it does not answer, whatever happened before.

A hypothesis state machine drives one conversation through random interleavings of:
sends whose scripted replies call Python functions (some raise), declaration-only
functions and unknown functions, with and without call ids, over several model calls;
budget limits and AFC switched off per message; streams read to the end or abandoned;
model errors in the middle of automatic function calling; rewinds; the caller answering
returned calls (all, some, with or without ids) or sending stale answers or its own
function call Part; and simulated crashes: a turn left open in the log between a model
function call and its response (written through the store with the lead's event kinds
and a dead writer's pid), after which the conversation is resumed by a new client with
``client.chats.get``.

Every request the transport receives is checked: each model content holding function
calls must be followed by a user content answering each call (by ``id`` when the call
has one, else by name count). The one exception is the message being sent, when the
caller sends a function call Part itself (a model turn, as in google-genai). After every
step the chat's context obeys the same rule and a fresh client rebuilds identical
histories from the log.

The resumption of a turn that stopped between a call and its response is also shown
with a real crash: a process killed (``os._exit``) inside a function the model called.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import chatledger
from chatledger import types
from chatledger.client._conversation import HOST
from chatledger.client.transports.base import ModelRequest
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import ChatStateError, ServerError
from chatledger.events.envelope import NewEvent
from chatledger.events.kinds import (
    EventData,
    FunctionCalled,
    FunctionResponded,
    ModelCallStarted,
    ModelResponded,
    UserMessageAdded,
)

Contents = list[dict[str, Any]]


# =========================================================================== the property


def unpaired_calls(contents: Contents, *, trailing_call_allowed: bool = False) -> list[str]:
    """Every model function call in ``contents`` that the next content does not answer.

    A call with an ``id`` is answered by a function response with that id, or else (as a
    call without an id) by a response of the same name not used for another call; each
    response answers one call. With ``trailing_call_allowed``, a last model content with
    calls (the caller's own function call message) is not checked.
    """
    problems: list[str] = []
    last = len(contents) - 1
    for index, content in enumerate(contents):
        parts = content.get("parts") or []
        calls = [
            p["functionCall"]
            for p in parts
            if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)
        ]
        if content.get("role") != "model" or not calls:
            continue
        if index == last and trailing_call_allowed:
            continue
        following = contents[index + 1] if index < last else None
        if following is None or following.get("role") != "user":
            problems.extend(
                f"contents[{index}] {call.get('name')}: nothing answers it" for call in calls
            )
            continue
        responses = [
            p["functionResponse"]
            for p in following.get("parts") or []
            if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)
        ]
        unused = list(range(len(responses)))
        by_id = {r.get("id"): i for i, r in enumerate(responses) if r.get("id") is not None}
        pending: list[dict[str, Any]] = []
        for call in calls:
            matched = by_id.get(call.get("id")) if call.get("id") is not None else None
            if matched is not None and matched in unused:
                unused.remove(matched)
            else:
                pending.append(call)
        names = Counter(responses[i].get("name") for i in unused)
        for call in pending:
            if names[call.get("name")] > 0:
                names[call.get("name")] -= 1
            else:
                problems.append(
                    f"contents[{index}] {call.get('name')} (id {call.get('id')}): unanswered"
                )
    return problems


def test_the_checker_itself() -> None:
    call = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
    call_id = {"role": "model", "parts": [{"functionCall": {"id": "a", "name": "f", "args": {}}}]}
    two = {
        "role": "model",
        "parts": [{"functionCall": {"name": "f"}}, {"functionCall": {"name": "f"}}],
    }
    answer = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
    answer_b = {
        "role": "user",
        "parts": [{"functionResponse": {"id": "b", "name": "g", "response": {}}}],
    }
    text = {"role": "user", "parts": [{"text": "hi"}]}
    assert unpaired_calls([text, call, answer]) == []
    assert unpaired_calls([text, call_id, answer]) == []  # answered by name
    assert unpaired_calls([text, call, text]) != []
    assert unpaired_calls([text, call]) != []
    assert unpaired_calls([text, call], trailing_call_allowed=True) == []
    assert unpaired_calls([text, call_id, answer_b]) != []
    assert unpaired_calls([text, two, answer]) != []  # one answer for two calls


@pytest.mark.parametrize("second_id", [None, "call-2"])
def test_a_partial_answer_by_id_sends_only_the_answered_call(
    db_path: Path, second_id: str | None
) -> None:
    """The model calls one function twice; the caller answers only the first, by id.
    The next request must carry the first call and its answer, not the second call."""
    transport = PairingTransport()
    first = {"id": "call-1", "name": "lookup", "args": {"q": "a"}}
    second = {"name": "lookup", "args": {"q": "b"}}
    if second_id is not None:
        second = {"id": second_id, **second}
    transport.plan.extend(
        [
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [{"functionCall": first}, {"functionCall": second}],
                        },
                        "finishReason": "STOP",
                    }
                ]
            },
            text_response("Thanks."),
        ]
    )
    with chatledger.Client(store=str(db_path), transport=transport) as client:
        chat = client.chats.create(model="gemini-test", config={"tools": [DECLARATION_TOOL]})
        chat.send_message("Look up a and b")
        chat.send_message(
            types.Part.from_function_response(name="lookup", response={"found": "a"}, id="call-1")
        )
        sent = transport.requests[-1].contents
        assert sent[-2] == {"role": "model", "parts": [{"functionCall": first}]}
        assert transport.violations == []


# =========================================================================== the transport


class PairingTransport(ScriptedTransport):
    """ScriptedTransport answering from ``plan`` (a plain text reply when it runs out),
    checking the pairing rule on every request it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.plan: deque[dict[str, Any] | BaseException] = deque()
        self.violations: list[tuple[list[str], Contents]] = []
        self.trailing_call_allowed_once = False

    def _take(self, request: ModelRequest) -> dict[str, Any] | BaseException:
        self.requests.append(request)
        problems = unpaired_calls(
            request.contents, trailing_call_allowed=self.trailing_call_allowed_once
        )
        self.trailing_call_allowed_once = False
        if problems:
            self.violations.append((problems, request.contents))
        return self.plan.popleft() if self.plan else text_response("(plain reply)")

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        reply = self._take(request)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def stream(self, request: ModelRequest) -> Iterator[dict[str, Any]]:
        reply = self._take(request)
        if isinstance(reply, BaseException):
            raise reply
        yield reply


# =========================================================================== tools


def ok_tool(x: int = 0) -> dict[str, int]:
    """Succeeds."""
    return {"doubled": 2 * x}


def raising_tool(x: int = 0) -> int:
    """Always raises."""
    raise RuntimeError(f"raising_tool failed on {x}")


DECLARED = {
    "name": "declared_tool",
    "description": "Answered by the caller.",
    "parameters": {"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}},
}
DECLARATION_TOOL = {"function_declarations": [DECLARED]}
CHAT_CONFIG: dict[str, Any] = {"tools": [ok_tool, raising_tool]}
CALLABLE_NAMES = ["ok_tool", "raising_tool", "declared_tool", "unknown_tool"]
PER_MESSAGE_CONFIGS: dict[str, dict[str, Any] | None] = {
    "chat's": None,
    "budget 1": {"automatic_function_calling": {"maximum_remote_calls": 1}},
    "budget 2": {"automatic_function_calling": {"maximum_remote_calls": 2}},
    "budget 3": {"automatic_function_calling": {"maximum_remote_calls": 3}},
    "afc off": {"automatic_function_calling": {"disable": True}},
    "declarations only": {"tools": [DECLARATION_TOOL]},
    "mixed (afc off)": {"tools": [ok_tool, DECLARATION_TOOL]},
}
SERVER_ERROR = ServerError(
    503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


DEAD_PID = _dead_pid()

# A reply: ("text",) | ("empty",) | ("error",) | ("calls", [(name, with_id), ...], with_text)
call_specs = st.lists(
    st.tuples(st.sampled_from(CALLABLE_NAMES), st.booleans()), min_size=1, max_size=3
)
replies = st.one_of(
    st.just(("text",)),
    st.just(("empty",)),
    st.just(("error",)),
    st.tuples(st.just("calls"), call_specs, st.booleans()),
)
plans = st.lists(replies, min_size=1, max_size=4)


def _wire(contents: list[types.Content]) -> Contents:
    return [content.to_wire() for content in contents]


def _last_turn_turn_number(events: list[chatledger.RecordedEvent]) -> int:
    return max((e.data.turn for e in events if isinstance(e.data, UserMessageAdded)), default=0)


class PairingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = chatledger.MemoryStore()
        self.transport = PairingTransport()
        self.clients: list[chatledger.Client] = []
        self.chat: chatledger.Chat
        self.ids = 0
        self.steps: list[str] = []

    def _client(self) -> chatledger.Client:
        client = chatledger.Client(store=self.store, transport=self.transport, busy_timeout=0)
        self.clients.append(client)
        return client

    def _reply(self, spec: tuple[Any, ...]) -> dict[str, Any] | BaseException:
        if spec[0] == "text":
            return text_response("some text")
        if spec[0] == "empty":
            return {"candidates": [{"finishReason": "SAFETY"}]}
        if spec[0] == "error":
            return SERVER_ERROR
        parts: list[dict[str, Any]] = [{"text": "Let me call."}] if spec[2] else []
        for name, with_id in spec[1]:
            call: dict[str, Any] = {"name": name, "args": {"x": len(parts)}}
            if with_id:
                self.ids += 1
                call = {"id": f"call-{self.ids}", **call}
            parts.append({"functionCall": call})
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]
        }

    def _plan(self, plan: list[tuple[Any, ...]]) -> None:
        self.transport.plan.clear()
        self.transport.plan.extend(self._reply(spec) for spec in plan)

    def _returned_calls(self) -> list[dict[str, Any]]:
        """The function calls of the last content of the full history, if it is a model
        content (calls returned to the caller, or left by a spent budget)."""
        history = _wire(self.chat.get_history())
        if not history or history[-1].get("role") != "model":
            return []
        return [p["functionCall"] for p in history[-1].get("parts") or [] if "functionCall" in p]

    # ----------------------------------------------------------------- rules

    @initialize()
    def start(self) -> None:
        self.chat = self._client().chats.create(model="gemini-test", config=CHAT_CONFIG)

    @rule(
        plan=plans,
        config=st.sampled_from(sorted(PER_MESSAGE_CONFIGS)),
        mode=st.sampled_from(["send", "stream", "abandoned stream"]),
        data=st.data(),
    )
    def send(
        self, plan: list[tuple[Any, ...]], config: str, mode: str, data: st.DataObject
    ) -> None:
        """A send; the caller then often answers the calls returned to it at once."""
        self.steps.append(f"send {mode} {config} {plan}")
        self._plan(plan)
        per_message = PER_MESSAGE_CONFIGS[config]
        try:
            if mode == "send":
                self.chat.send_message("Go on", config=per_message)
            else:
                stream = self.chat.send_message_stream("Go on", config=per_message)
                with contextlib.closing(stream):
                    for _ in stream:
                        if mode == "abandoned stream":
                            break
        except ServerError:
            pass
        if bool(self._returned_calls()) and data.draw(st.booleans(), label="answer at once"):
            self._answer(data)

    @rule(data=st.data())
    def answer_returned_calls(self, data: st.DataObject) -> None:
        """The caller answers the calls returned to it later (after other steps)."""
        self._answer(data)

    def _answer(self, data: st.DataObject) -> None:
        """Answer the returned calls: all or some, with or without their ids."""
        calls = self._returned_calls()
        if not calls:
            return
        chosen = data.draw(
            st.lists(
                st.sampled_from(range(len(calls))), min_size=1, max_size=len(calls), unique=True
            ),
            label="answered",
        )
        keep_ids = data.draw(st.booleans(), label="with ids")
        self.steps.append(f"answer {chosen} of {calls} ids={keep_ids}")
        answers: list[types.PartUnionDict] = [
            types.Part.from_function_response(
                name=str(calls[i]["name"]),
                response={"answer": i},
                id=calls[i].get("id") if keep_ids else None,
            )
            for i in sorted(chosen)
        ]
        self._plan(data.draw(plans, label="replies to the answer"))
        with contextlib.suppress(ServerError):
            self.chat.send_message(answers)

    @rule(name=st.sampled_from(CALLABLE_NAMES))
    def stale_answer(self, name: str) -> None:
        """A function response nothing asked for (the model's call was rewound, say)."""
        self.steps.append(f"stale answer {name}")
        self._plan([("text",)])
        self.chat.send_message(
            types.Part.from_function_response(name=name, response={"late": True})
        )

    @rule(plan=plans)
    def send_own_call(self, plan: list[tuple[Any, ...]]) -> None:
        """The caller sends a function call Part: a model turn, sent last as given."""
        self.steps.append(f"own call {plan}")
        self._plan(plan)
        self.transport.trailing_call_allowed_once = True
        try:
            self.chat.send_message(types.Part.from_function_call(name="ok_tool", args={"x": 1}))
        except ServerError:
            pass
        finally:
            self.transport.trailing_call_allowed_once = False

    @rule()
    def rewind(self) -> None:
        self.steps.append("rewind")
        try:
            self.chat.rewind()
        except ChatStateError:
            assert self.chat.get_history() == []

    @rule(
        stop=st.sampled_from(
            [
                "waiting for the model",
                "after the model's calls",
                "after function_called",
                "between responses",
                "after the next call started",
            ]
        ),
        spec=call_specs,
    )
    def crash(self, stop: str, spec: list[tuple[str, bool]]) -> None:
        """A writer died in the middle of a turn: its events are in the log, the turn is
        open. A new client resumes the conversation with chats.get."""
        self.steps.append(f"crash {stop} {spec}")
        events = self.store.read(self.chat.id)
        turn = _last_turn_turn_number(events) + 1
        response = self._reply(
            (
                "calls",
                [(n, i) for n, i in spec if n in ("ok_tool", "raising_tool")]
                or [("ok_tool", True)],
                False,
            )
        )
        assert isinstance(response, dict)
        calls = [p["functionCall"] for p in response["candidates"][0]["content"]["parts"]]
        datas: list[EventData] = [
            UserMessageAdded(turn=turn, content={"role": "user", "parts": [{"text": "crashing"}]}),
            ModelCallStarted(turn=turn, model="gemini-test", contents_count=1),
        ]
        if stop != "waiting for the model":
            datas.append(ModelResponded(turn=turn, response=response, ends_turn=False))
        if stop in ("after function_called", "between responses", "after the next call started"):
            datas += [
                FunctionCalled(
                    turn=turn, name=c["name"], args=c["args"], call_id=c.get("id"), index=i
                )
                for i, c in enumerate(calls)
            ]
        answered = (
            calls[:1]
            if stop == "between responses"
            else calls
            if stop == "after the next call started"
            else []
        )
        datas += [
            FunctionResponded(
                turn=turn, name=c["name"], response={"result": 0}, call_id=c.get("id"), index=i
            )
            for i, c in enumerate(answered)
        ]
        if stop == "after the next call started":
            datas.append(
                ModelCallStarted(turn=turn, model="gemini-test", attempt=1, contents_count=3)
            )
        owner = {"actor": "crashed-writer", "host": HOST, "pid": DEAD_PID}
        new_events = [
            NewEvent(data=data, metadata=owner if i == 0 else {"actor": "crashed-writer"})
            for i, data in enumerate(datas)
        ]
        self.store.append(self.chat.id, new_events, expected_version=events[-1].version)
        self.chat = self._client().chats.get(self.chat.id, config=CHAT_CONFIG)

    @rule()
    def resume(self) -> None:
        self.steps.append("resume")
        self.chat = self._client().chats.get(self.chat.id, config=CHAT_CONFIG)

    # ----------------------------------------------------------------- checks

    @invariant()
    def no_request_carried_an_unanswered_call(self) -> None:
        assert self.transport.violations == [], (self.transport.violations, self.steps)

    @invariant()
    def the_context_is_paired_and_rebuilds_identically(self) -> None:
        if not hasattr(self, "chat"):
            return
        context = _wire(self.chat.get_context())
        assert unpaired_calls(context) == [], (context, self.steps)
        fresh = chatledger.Client(store=self.store, transport=self.transport)
        try:
            rebuilt = fresh.chats.get(self.chat.id)
            assert _wire(rebuilt.get_history()) == _wire(self.chat.get_history())
            assert _wire(rebuilt.get_context()) == context
            assert _wire(rebuilt.get_history(curated=True)) == _wire(
                self.chat.get_history(curated=True)
            )
        finally:
            fresh.close()

    def teardown(self) -> None:
        try:
            if hasattr(self, "chat"):
                assert self.store.verify(self.chat.id).ok
        finally:
            for client in self.clients:
                client.close()


PairingMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_no_request_ever_carries_an_unanswered_function_call = PairingMachine.TestCase


# =========================================================================== resumption


def _open_turn_with_a_call(store: chatledger.EventStore, conversation_id: str) -> dict[str, Any]:
    """Append a turn that stopped after the model's call was recorded and its function
    started (function_called), before its response: a writer that died there."""
    events = store.read(conversation_id)
    turn = _last_turn_turn_number(events) + 1
    call = {"id": "call-9", "name": "ok_tool", "args": {"x": 4}}
    response = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"functionCall": call}]},
                "finishReason": "STOP",
            }
        ]
    }
    datas: list[EventData] = [
        UserMessageAdded(turn=turn, content={"role": "user", "parts": [{"text": "Double 4"}]}),
        ModelCallStarted(turn=turn, model="gemini-test", contents_count=1),
        ModelResponded(turn=turn, response=response, ends_turn=False),
        FunctionCalled(turn=turn, name="ok_tool", args={"x": 4}, call_id="call-9"),
    ]
    owner = {"actor": "crashed-writer", "host": HOST, "pid": DEAD_PID}
    store.append(
        conversation_id,
        [
            NewEvent(data=d, metadata=owner if i == 0 else {"actor": "crashed-writer"})
            for i, d in enumerate(datas)
        ],
        expected_version=events[-1].version,
    )
    return call


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_resumed_chat_whose_turn_stopped_between_call_and_response_carries_on(
    db_path: Path, flavour: str
) -> None:
    transport = PairingTransport()
    with chatledger.Client(store=str(db_path), transport=transport) as first:
        chat = first.chats.create(model="gemini-test", config=CHAT_CONFIG)
        transport.plan.append(text_response("Hello"))
        chat.send_message("Hi")
        conversation_id = chat.id
        _open_turn_with_a_call(first.store, conversation_id)

    transport.plan.extend([text_response("Still here.")])
    with chatledger.Client(store=str(db_path), transport=transport) as second:
        if flavour == "sync":
            resumed: Any = second.chats.get(conversation_id, config=CHAT_CONFIG)
            reply = resumed.send_message("Are you there?")
        else:
            resumed = second.aio.chats.get(conversation_id, config=CHAT_CONFIG)
            reply = asyncio.run(resumed.send_message("Are you there?"))
        assert reply.text == "Still here."
        # The dead turn was closed, not completed: its call is in no history and was not sent.
        sent = transport.requests[-1].contents
        assert sent == [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello"}]},
            {"role": "user", "parts": [{"text": "Are you there?"}]},
        ]
        assert transport.violations == []
        events = second.store.read(conversation_id)
        kinds = [event.type for event in events]
        assert kinds[-8:] == [
            "user_message_added",
            "model_call_started",
            "model_responded",
            "function_called",
            "turn_abandoned",
            "user_message_added",
            "model_call_started",
            "model_responded",
        ]
        abandoned = events[-4].data
        assert f"process {DEAD_PID}" in abandoned.reason  # type: ignore[attr-defined]
        assert _wire(resumed.get_history()) == [
            *sent,
            {"role": "model", "parts": [{"text": "Still here."}]},
        ]
        # And function calling works again in the resumed chat.
        transport.plan.extend(
            [
                {
                    "candidates": [
                        {
                            "content": {
                                "role": "model",
                                "parts": [{"functionCall": {"name": "ok_tool", "args": {"x": 5}}}],
                            },
                            "finishReason": "STOP",
                        }
                    ]
                },
                text_response("10."),
            ]
        )
        if flavour == "sync":
            assert resumed.send_message("Double 5").text == "10."
        else:
            assert asyncio.run(resumed.send_message("Double 5")).text == "10."
        assert transport.violations == []
        responded = [
            e.data
            for e in second.store.read(conversation_id)
            if isinstance(e.data, FunctionResponded)
        ]
        assert responded[-1].response == {"result": {"doubled": 10}}


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    import chatledger
    from chatledger.client.transports.scripted import ScriptedTransport

    def ok_tool(x: int = 0) -> dict[str, int]:
        '''Succeeds.'''
        os._exit(17)  # ... but this one dies in the middle of the call

    transport = ScriptedTransport()
    transport.enqueue({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "ok_tool", "args": {"x": 4}}}]}, "finishReason": "STOP"}]})
    client = chatledger.Client(store=sys.argv[1], transport=transport)
    chat = client.chats.get(sys.argv[2], config={"tools": [ok_tool]})
    print("sending", flush=True)
    chat.send_message("Double 4")
    print("not reached", flush=True)
    """
)


def test_a_process_killed_inside_a_called_function(db_path: Path) -> None:
    """A real crash: the writer process dies (os._exit) while running the function the
    model called. The log holds the call and no response; a new process resumes the
    conversation and carries on, never sending the unanswered call."""
    transport = PairingTransport()
    with chatledger.Client(store=str(db_path), transport=transport) as setup:
        chat = setup.chats.create(model="gemini-test", config={"tools": [ok_tool]})
        conversation_id = chat.id

    result = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(db_path), conversation_id],
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert result.returncode == 17, result.stderr
    assert result.stdout == "sending\n"

    transport.plan.extend([text_response("Welcome back.")])
    with chatledger.Client(store=str(db_path), transport=transport) as resumer:
        events = resumer.store.read(conversation_id)
        assert [event.type for event in events][-4:] == [
            "user_message_added",
            "model_call_started",
            "model_responded",
            "function_called",
        ]
        resumed = resumer.chats.get(conversation_id, config={"tools": [ok_tool]})
        assert resumed.get_history() == []  # the crashed turn never completed
        assert resumed.send_message("Hello again").text == "Welcome back."
        assert transport.requests[-1].contents == [
            {"role": "user", "parts": [{"text": "Hello again"}]}
        ]
        assert transport.violations == []
        kinds = [event.type for event in resumer.store.read(conversation_id)]
        assert kinds[-4:] == [
            "turn_abandoned",
            "user_message_added",
            "model_call_started",
            "model_responded",
        ]
        assert resumed.verify().ok
