"""Projections: the folds that build full, context and curated histories from events.

Properties:
- our context algorithm equals google-genai 3.3.0's own ``_extract_curated_history``;
- the state advanced one event at a time equals the state rebuilt from the log, both in
  this process and in a fresh one;
- every history is a function of completed turns only (failures leave no trace).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
from google.genai import chats as genai_chats
from google.genai import types as genai_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.events import (
    ConfigChanged,
    ConversationStarted,
    ErrorInfo,
    FunctionCalled,
    FunctionResponded,
    HistoryReplaced,
    MemoryStore,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    NewEvent,
    SQLiteStore,
    TurnAbandoned,
    TurnRewound,
    UserMessageAdded,
)
from chatledger.events.kinds import EventData
from chatledger.projections import history, usage
from chatledger.projections.history import (
    HistoryState,
    curate_contents,
    extract_context,
    sendable,
    split_turns,
)

# --------------------------------------------------------------------------- strategies

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
text_part = st.builds(lambda t: {"text": t}, texts)
call_part = st.builds(
    lambda name, n: {"functionCall": {"name": name, "args": {"n": n}}},
    st.sampled_from(["f", "g"]),
    st.integers(0, 3),
)
response_part = st.builds(
    lambda name: {"functionResponse": {"name": name, "response": {"result": 1}}},
    st.sampled_from(["f", "g"]),
)
empty_part: st.SearchStrategy[dict[str, Any]] = st.just({})
unknown_part = st.just({"text": "x", "futureField": {"a": 1}})


def contents(
    role: str, parts: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda ps: {"role": role, "parts": ps}, st.lists(parts, max_size=3))


user_content = contents("user", st.one_of(text_part, response_part))
model_content = contents("model", st.one_of(text_part, text_part, call_part, empty_part))
any_content = st.one_of(user_content, model_content)


def _to_genai(content: dict[str, Any]) -> genai_types.Content:
    parts = [genai_types.Part.model_validate(part) for part in content["parts"]]
    return genai_types.Content(role=content["role"], parts=parts)


def _from_genai(content: genai_types.Content) -> dict[str, Any]:
    return {
        "role": content.role,
        "parts": [
            part.model_dump(by_alias=True, exclude_none=True) for part in content.parts or []
        ],
    }


# --------------------------------------------------------------------------- algorithms


@given(st.lists(any_content, max_size=12))
def test_context_algorithm_equals_google_genai(full: list[dict[str, Any]]) -> None:
    """extract_context on wire contents == google-genai's _extract_curated_history."""
    ours = extract_context(full)
    theirs = [
        _from_genai(c) for c in genai_chats._extract_curated_history([_to_genai(c) for c in full])
    ]
    assert ours == theirs


@given(st.lists(any_content, max_size=12))
def test_context_per_turn_equals_whole_history(full: list[dict[str, Any]]) -> None:
    """Splitting into turns (as the fold does) never changes what the algorithm keeps."""
    per_turn = [content for turn in split_turns(full) for content in extract_context(turn)]
    assert per_turn == extract_context(full)


@given(st.lists(any_content, max_size=12))
def test_sendable_never_leaves_an_unanswered_call(full: list[dict[str, Any]]) -> None:
    result = sendable(full)
    for index, content in enumerate(result):
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        if content["role"] != "model" or not calls:
            continue
        assert index + 1 < len(result), "a call at the end of the request has no response"
        following = result[index + 1]
        answered = [
            p["functionResponse"]["name"] for p in following["parts"] if "functionResponse" in p
        ]
        assert following["role"] == "user"
        for name in set(calls):
            assert calls.count(name) <= answered.count(name)
    # Only function calls are ever removed.
    removed = [p for c in full for p in c["parts"]]
    kept = [p for c in result for p in c["parts"]]
    assert all("functionCall" in p for p in _multiset_difference(removed, kept))


def _multiset_difference(a: list[Any], b: list[Any]) -> list[Any]:
    remaining = list(b)
    out = []
    for item in a:
        if item in remaining:
            remaining.remove(item)
        else:
            out.append(item)
    return out


def test_sendable_keeps_answered_calls_and_matches_ids() -> None:
    call = {"role": "model", "parts": [{"functionCall": {"id": "a", "name": "f", "args": {}}}]}
    answered = {
        "role": "user",
        "parts": [{"functionResponse": {"id": "a", "name": "f", "response": {}}}],
    }
    wrong_id = {
        "role": "user",
        "parts": [{"functionResponse": {"id": "b", "name": "g", "response": {}}}],
    }
    assert sendable([call, answered]) == [call, answered]
    assert sendable([call, wrong_id]) == [wrong_id]
    assert sendable([call]) == []
    mixed = {
        "role": "model",
        "parts": [{"text": "let me check"}, {"functionCall": {"name": "f", "args": {}}}],
    }
    assert sendable([mixed]) == [{"role": "model", "parts": [{"text": "let me check"}]}]


def test_curated_removes_function_steps_only() -> None:
    full: list[dict[str, Any]] = [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": 1}}}]},
        {
            "role": "model",
            "parts": [{"text": "sunny"}, {"functionCall": {"name": "g", "args": {}}}],
        },
    ]
    assert curate_contents(full) == [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"text": "sunny"}]},
    ]


# --------------------------------------------------------------------------- event streams


def _response(content: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    if content is not None:
        candidate["content"] = content
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate] if candidate else [], "usageMetadata": {"totalTokenCount": 3}}


@st.composite
def turn_events(draw: st.DrawFn, turn: int) -> list[EventData]:
    """The events of one turn: completed, AFC, failed, abandoned or left open."""
    kind = draw(st.sampled_from(["plain", "stream", "afc", "failed", "abandoned"]))
    user = draw(user_content)
    events: list[EventData] = [
        UserMessageAdded(turn=turn, content=user),
        ModelCallStarted(turn=turn, model="m", streamed=kind == "stream"),
    ]
    if kind == "failed":
        events.append(
            ModelCallFailed(turn=turn, error=ErrorInfo(kind="ServerError", message="503", code=503))
        )
        return events
    if kind == "abandoned":
        events.append(TurnAbandoned(turn=turn, reason="test"))
        return events
    if kind == "afc":
        call = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"n": 1}}}]}
        events += [
            ModelResponded(turn=turn, response=_response(call, "STOP"), ends_turn=False),
            FunctionCalled(turn=turn, name="f", args={"n": 1}),
            FunctionResponded(turn=turn, name="f", response={"result": 2}),
            ModelCallStarted(turn=turn, model="m", attempt=1),
        ]
    content = draw(st.one_of(st.none(), model_content))
    finish = draw(st.sampled_from([None, "STOP", "MAX_TOKENS"]))
    events.append(
        ModelResponded(turn=turn, response=_response(content, finish), streamed=kind == "stream")
    )
    return events


@st.composite
def conversations(draw: st.DrawFn) -> list[EventData]:
    events: list[EventData] = [
        ConversationStarted(model="m", history=draw(st.lists(any_content, max_size=4)))
    ]
    turn = len(split_turns(events[0].history)) + 1  # type: ignore[attr-defined]
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["turn", "turn", "turn", "rewind", "config", "replace"]))
        if op == "turn":
            events += draw(turn_events(turn))
            turn += 1
        elif op == "rewind":
            events.append(TurnRewound(turn=turn - 1))
        elif op == "config":
            events.append(ConfigChanged(config={"temperature": draw(st.floats(0, 1))}))
        else:
            replaced = draw(st.lists(user_content, max_size=2))
            events.append(HistoryReplaced(history=replaced))
            turn += len(split_turns(replaced))  # as the client numbers turns: state.next_turn
    return events


def _append_all(
    store: Any, conversation_id: str, datas: list[EventData]
) -> tuple[HistoryState, usage.UsageState]:
    """Append one event at a time, advancing the projections as each is recorded."""
    state, totals = HistoryState(), usage.UsageState()
    for data in datas:
        store.append(conversation_id, [NewEvent(data=data)], expected_version=state.version)
        (event,) = store.read(conversation_id, after_version=state.version)
        history.apply(state, event)
        usage.apply(totals, event)
    return state, totals


def _dump(state: Any) -> Any:
    return json.loads(msgspec.json.encode(state))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_incremental_state_equals_rebuilt_state(datas: list[EventData]) -> None:
    store = MemoryStore()
    state, totals = _append_all(store, "c", datas)
    events = store.read("c")
    assert _dump(history.fold(events)) == _dump(state)
    assert _dump(usage.fold(events)) == _dump(totals)
    # Any prefix folds to the state the incremental fold had at that point.
    middle = len(events) // 2
    prefix_state = history.fold(events[:middle])
    assert _dump(history.fold(events[middle:], prefix_state)) == _dump(state)
    # Snapshots round-trip.
    assert _dump(history.load_state(history.dump_state(state))) == _dump(state)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_histories_follow_completed_turns_only(datas: list[EventData]) -> None:
    store = MemoryStore()
    state, _ = _append_all(store, "c", datas)
    assert state.pending is None or isinstance(state.pending, history.PendingTurn)
    # Every history is derivable from the full one per turn, and curated from context.
    assert state.curated == curate_contents(state.context)
    spans = sum(span.full for span in state.turns)
    assert spans == len(state.full)
    assert sum(span.context for span in state.turns) == len(state.context)
    for content in state.full:
        assert content.get("role") in ("user", "model")
    # A failed or abandoned turn leaves nothing: the user texts in history are exactly
    # those of completed (and not rewound) turns; counted through the turn spans.
    assert len(state.turns) == len({span.turn for span in state.turns})


_REBUILD = r"""
import json, sys, msgspec
from chatledger.events import SQLiteStore
from chatledger.projections import history, usage
store = SQLiteStore(sys.argv[1])
out = {}
for info in store.conversations():
    events = store.read(info.conversation_id)
    out[info.conversation_id] = [
        json.loads(msgspec.json.encode(history.fold(events))),
        json.loads(msgspec.json.encode(usage.fold(events))),
    ]
print(json.dumps(out))
"""


def test_fresh_process_rebuilds_the_same_state(tmp_path: Path) -> None:
    """Random conversations written here are rebuilt identically by another process."""
    path = tmp_path / "log.db"
    store = SQLiteStore(path)
    expected: dict[str, Any] = {}

    @settings(max_examples=40, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(conversations())
    def record(datas: list[EventData]) -> None:
        conversation_id = f"c{len(expected)}"
        state, totals = _append_all(store, conversation_id, datas)
        expected[conversation_id] = [_dump(state), _dump(totals)]

    record()
    store.close()
    result = subprocess.run(
        [sys.executable, "-c", _REBUILD, str(path)], capture_output=True, text=True, check=True
    )
    rebuilt = json.loads(result.stdout)
    assert set(rebuilt) == set(expected)
    for conversation_id, states in expected.items():
        assert rebuilt[conversation_id] == states, conversation_id
