"""The history projection: full, context and curated histories folded from events.

Three views of one log (docs/chat-api.md#histories):

- **full**: every completed turn, the user content then the model content(s), AFC steps
  in order; an empty response records ``{"role": "model", "parts": []}``.
- **context**: google-genai 3.3.0's curated algorithm over the full history: a run of
  model contents containing an invalid one is dropped with the single user content
  before it. :func:`sendable` then removes function calls that have no response.
- **curated**: the context with function call and function response parts removed, and
  contents left without parts removed: the conversation as a person reads it.

A turn enters the histories only when it completes; a failed or abandoned turn leaves
them unchanged. All contents are kept in wire form (camelCase JSON), never re-encoded.

``apply`` is deterministic and does no I/O; it advances the state in place and returns
it. Use :meth:`HistoryState.copy` to keep an earlier state.
"""

from __future__ import annotations

import copy as _copy
from collections import Counter
from typing import Any

import msgspec

from ..events.envelope import RecordedEvent
from ..events.kinds import (
    ConfigChanged,
    ConversationStarted,
    EventData,
    FunctionResponded,
    HistoryReplaced,
    ModelCallFailed,
    ModelCallStarted,
    ModelResponded,
    ParentRef,
    TurnAbandoned,
    TurnRewound,
    UserMessageAdded,
)
from .continuation import merge_hops

__all__ = [
    "HistoryState",
    "PendingTurn",
    "TurnSpan",
    "apply",
    "content_is_valid",
    "curate_contents",
    "empty_model_content",
    "extract_context",
    "response_content",
    "response_is_valid",
    "sendable",
    "split_turns",
]

WireContent = dict[str, Any]


def empty_model_content() -> WireContent:
    return {"role": "model", "parts": []}


# --------------------------------------------------------------------------- validity


def content_is_valid(content: WireContent) -> bool:
    """As google-genai: a content is valid when it has parts and no part is empty."""
    parts = content.get("parts")
    if not parts or not isinstance(parts, list):
        return False
    return all(isinstance(part, dict) and _part_is_set(part) for part in parts)


def _part_is_set(part: dict[str, Any]) -> bool:
    return any(value is not None for value in part.values())


def response_content(response: dict[str, Any]) -> WireContent | None:
    """The first candidate's content of a wire response, or None."""
    candidates = response.get("candidates")
    if not candidates or not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        return None
    content = candidates[0].get("content")
    return content if isinstance(content, dict) and content else None


def response_is_valid(response: dict[str, Any], *, streamed: bool) -> bool:
    """Whether a model response makes its turn valid.

    A streamed response (merged from its chunks) must also have finished with a
    ``finishReason``: a stream cut short is not a valid turn.
    """
    content = response_content(response)
    if content is None or not content_is_valid(content):
        return False
    if streamed:
        candidates = response.get("candidates") or [{}]
        return bool(candidates[0].get("finishReason"))
    return True


# --------------------------------------------------------------------------- algorithms


def extract_context(contents: list[WireContent]) -> list[WireContent]:
    """google-genai 3.3.0's ``_extract_curated_history``, on wire contents.

    Raises ValueError for a role other than ``user`` or ``model``.
    """
    curated: list[WireContent] = []
    i = 0
    length = len(contents)
    while i < length:
        role = contents[i].get("role")
        if role not in ("user", "model"):
            raise ValueError(f"Role must be user or model, but got {role}")
        if role == "user":
            curated.append(contents[i])
            i += 1
            continue
        run: list[WireContent] = []
        valid = True
        while i < length and contents[i].get("role") == "model":
            run.append(contents[i])
            if valid and not content_is_valid(contents[i]):
                valid = False
            i += 1
        if valid:
            curated.extend(run)
        elif curated:
            curated.pop()
    return curated


def curate_contents(contents: list[WireContent]) -> list[WireContent]:
    """The curated history: function call / response parts removed, and the contents
    that held only such parts. Any other content stays as it is (an empty one too, as in
    google-genai's curated history)."""
    curated: list[WireContent] = []
    for content in contents:
        original = content.get("parts") or []
        parts = [
            part
            for part in original
            if not (
                isinstance(part, dict) and ("functionCall" in part or "functionResponse" in part)
            )
        ]
        if len(parts) == len(original):
            curated.append(content)
        elif parts:
            curated.append({**content, "parts": parts})
    return curated


def _is_function_response_content(content: WireContent) -> bool:
    parts = content.get("parts") or []
    return (
        content.get("role") == "user"
        and bool(parts)
        and all(isinstance(p, dict) and "functionResponse" in p for p in parts)
    )


def split_turns(contents: list[WireContent]) -> list[list[WireContent]]:
    """Split a history into turns: each starts at a user content that is not a function
    response (the AFC steps of a turn stay with it)."""
    turns: list[list[WireContent]] = []
    for content in contents:
        starts = content.get("role") == "user" and not _is_function_response_content(content)
        if starts or not turns:
            turns.append([content])
        else:
            turns[-1].append(content)
    return turns


def sendable(contents: list[WireContent], *, keep_last: bool = False) -> list[WireContent]:
    """``contents`` without function calls that the next content does not answer.

    A model ``functionCall`` part is kept only when the following content is a user
    content with a ``functionResponse`` for it (by id when the call has one, else by
    name). A content left with no parts is dropped. Everything else passes unchanged.
    With ``keep_last``, the last content (the message being sent) is kept as it is:
    only the history before it is filtered.
    """
    result: list[WireContent] = []
    last = len(contents) - 1
    for index, content in enumerate(contents):
        parts = content.get("parts") or []
        calls = [
            p for p in parts if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)
        ]
        if content.get("role") != "model" or not calls or (keep_last and index == last):
            result.append(content)
            continue
        following = contents[index + 1] if index < last else None
        responses: list[dict[str, Any]] = []
        if following is not None and following.get("role") == "user":
            responses = [
                part["functionResponse"]
                for part in following.get("parts") or []
                if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict)
            ]
        # Responses answer calls by id first; only those left over answer by name.
        call_ids = {c["functionCall"].get("id") for c in calls} - {None}
        by_id = {r.get("id") for r in responses if r.get("id") in call_ids}
        by_name: Counter[Any] = Counter(
            r.get("name") for r in responses if r.get("id") not in by_id
        )
        kept: list[Any] = []
        for part in parts:
            call = part.get("functionCall") if isinstance(part, dict) else None
            if not isinstance(call, dict) or (
                call.get("id") is not None and call.get("id") in by_id
            ):
                kept.append(part)
            elif by_name[call.get("name")] > 0:
                by_name[call.get("name")] -= 1
                kept.append(part)
        if len(kept) == len(parts):
            result.append(content)
        elif kept:
            result.append({**content, "parts": kept})
    return result


# --------------------------------------------------------------------------- state


class TurnSpan(msgspec.Struct, array_like=True):
    """How many contents one completed turn added to each history (to undo it), and the
    version of the event that completed it (to fork or look back after it).

    ``loaded``: the turn came with a given history (at the start, or a history
    replacement) rather than from a sent message; google-genai returns a sent message as
    ``UserContent`` (or ``ModelContent``) and a given history's contents as ``Content``.
    """

    turn: int
    full: int
    context: int
    curated: int
    version: int = 0
    loaded: bool = False


class PendingTurn(msgspec.Struct):
    """A turn that has started but not completed: its contents so far."""

    turn: int
    opened_at: str
    opened_version: int
    lease_seconds: float
    owner: dict[str, Any]
    user_input: WireContent
    # (user input, model outputs, valid) for each completed model call of the turn.
    steps: list[tuple[WireContent, list[WireContent], bool]] = []
    function_responses: list[dict[str, Any]] = []
    # The request contents of the next call, beyond the context: the turn so far.
    last_event_at: str = ""
    # The responses (stream partials) of the current model call's continuation hops so
    # far; merged with the response that ends the answer (docs/chat-api.md#continuation).
    hops: list[dict[str, Any]] = []


class HistoryState(msgspec.Struct):
    """The histories of one conversation at ``version``."""

    conversation_id: str = ""
    version: int = 0
    model: str = ""
    config: dict[str, Any] | None = None
    parent: ParentRef | None = None
    full: list[WireContent] = []
    context: list[WireContent] = []
    curated: list[WireContent] = []
    turns: list[TurnSpan] = []
    pending: PendingTurn | None = None
    last_response: dict[str, Any] | None = None
    last_streamed: bool = False
    next_turn: int = 1
    # Where each (conversation_id) prefix of a forked history ends, oldest first.
    lineage: list[tuple[str, int]] = []

    def copy(self) -> HistoryState:
        """An independent copy (contents are shared: they are never mutated)."""
        state = _copy.copy(self)
        state.full = list(self.full)
        state.context = list(self.context)
        state.curated = list(self.curated)
        state.turns = list(self.turns)
        state.lineage = list(self.lineage)
        if self.pending is not None:
            state.pending = _copy.copy(self.pending)
            state.pending.steps = list(self.pending.steps)
            state.pending.function_responses = list(self.pending.function_responses)
            state.pending.hops = list(self.pending.hops)
        return state

    def turn_contents(self) -> list[WireContent]:
        """The contents the open turn has added so far (sent after the context)."""
        if self.pending is None:
            return []
        contents: list[WireContent] = []
        for user_input, outputs, _valid in self.pending.steps:
            contents.append(user_input)
            contents.extend(outputs)
        return contents


def _start(state: HistoryState, data: ConversationStarted, event: RecordedEvent) -> None:
    if data.parent is None:
        state.full, state.context, state.curated, state.turns = [], [], [], []
        state.next_turn = 1
        state.last_response = None
        state.lineage = []
        _load_history(state, data.history, event.version)
    else:
        # A fork: the state already holds the parent's prefix (folded by the loader).
        state.lineage.append((data.parent.conversation_id, data.parent.version))
        if data.history:
            _load_history(state, data.history, event.version)
    state.pending = None
    state.conversation_id = event.conversation_id
    state.model = data.model
    state.config = data.config
    state.parent = data.parent


def _load_history(state: HistoryState, history: list[WireContent], version: int) -> None:
    for turn in split_turns(history):
        context = extract_context(turn)
        curated = curate_contents(context)
        state.full.extend(turn)
        state.context.extend(context)
        state.curated.extend(curated)
        state.turns.append(
            TurnSpan(state.next_turn, len(turn), len(context), len(curated), version, True)
        )
        state.next_turn += 1


def _complete(state: HistoryState, pending: PendingTurn, version: int) -> None:
    full: list[WireContent] = []
    context: list[WireContent] = []
    for user_input, outputs, valid in pending.steps:
        step = [user_input, *(outputs or [empty_model_content()])]
        full.extend(step)
        if valid:
            context.extend(step)
    curated = curate_contents(context)
    state.full.extend(full)
    state.context.extend(context)
    state.curated.extend(curated)
    state.turns.append(TurnSpan(pending.turn, len(full), len(context), len(curated), version))
    state.next_turn = max(state.next_turn, pending.turn + 1)
    state.pending = None


def _rewind(state: HistoryState) -> None:
    if not state.turns:
        return
    span = state.turns.pop()
    for name, count in (("full", span.full), ("context", span.context), ("curated", span.curated)):
        if count:
            items: list[WireContent] = getattr(state, name)
            del items[len(items) - count :]
    state.last_response = None


def apply(state: HistoryState, event: RecordedEvent) -> HistoryState:
    """Advance ``state`` by one event (in place) and return it."""
    data: EventData = event.data
    state.version = event.version
    pending = state.pending
    if pending is not None:
        pending.last_event_at = event.recorded_at

    if isinstance(data, UserMessageAdded):
        state.pending = PendingTurn(
            turn=data.turn,
            opened_at=event.recorded_at,
            opened_version=event.version,
            lease_seconds=data.lease_seconds,
            owner={k: event.metadata[k] for k in ("host", "pid", "actor") if k in event.metadata},
            user_input=data.content,
            steps=[],
            function_responses=[],
            last_event_at=event.recorded_at,
            hops=[],
        )
        state.next_turn = max(state.next_turn, data.turn + 1)
    elif isinstance(data, ModelCallStarted):
        if pending is not None and pending.function_responses:
            pending.user_input = {"role": "user", "parts": pending.function_responses}
            pending.function_responses = []
    elif isinstance(data, ModelResponded):
        if pending is not None and pending.turn == data.turn and data.continued:
            pending.hops = [*pending.hops, data.response]
        elif pending is not None and pending.turn == data.turn:
            # A continued answer is one reply: its hops merged (docs/chat-api.md#continuation).
            reply = merge_hops([*pending.hops, data.response]) if pending.hops else data.response
            pending.hops = []
            content = response_content(reply)
            outputs = [content] if content is not None else []
            pending.steps.append(
                (
                    pending.user_input,
                    outputs,
                    response_is_valid(reply, streamed=data.streamed),
                )
            )
            if data.ends_turn:
                state.last_response = reply
                state.last_streamed = data.streamed
                _complete(state, pending, event.version)
    elif isinstance(data, FunctionResponded):
        if pending is not None and pending.turn == data.turn:
            response: dict[str, Any] = {"name": data.name, "response": data.response}
            if data.call_id is not None:
                response = {"id": data.call_id, **response}
            pending.function_responses.append({"functionResponse": response})
    elif isinstance(data, ModelCallFailed):
        if data.ends_turn and pending is not None and pending.turn == data.turn:
            state.pending = None
        elif data.continued and pending is not None and pending.turn == data.turn:
            pending.hops = [*pending.hops, data.partial or {}]
    elif isinstance(data, TurnAbandoned):
        if pending is not None and pending.turn == data.turn:
            state.pending = None
    elif isinstance(data, TurnRewound):
        _rewind(state)
    elif isinstance(data, ConversationStarted):
        _start(state, data, event)
    elif isinstance(data, ConfigChanged):
        if data.config is not None:
            state.config = data.config
        if data.model is not None:
            state.model = data.model
    elif isinstance(data, HistoryReplaced):
        state.full, state.context, state.curated, state.turns = [], [], [], []
        state.pending = None
        state.last_response = None
        _load_history(state, data.history, event.version)
    return state


def fold(events: list[RecordedEvent], state: HistoryState | None = None) -> HistoryState:
    """Fold ``events`` into ``state`` (a fresh state when None)."""
    state = state if state is not None else HistoryState()
    for event in events:
        apply(state, event)
    return state


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(HistoryState)


def dump_state(state: HistoryState) -> bytes:
    """Serialise a state for a snapshot."""
    return _ENCODER.encode(state)


def load_state(data: bytes) -> HistoryState:
    return _DECODER.decode(data)
