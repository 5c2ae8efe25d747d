"""A hypothesis state machine over branching conversations.

Random sends, streams, failures, abandoned streams, rewinds and forks, on several
branches of one conversation, on a real SQLite file. A plain reference model (lists of
turns) says what every branch's full, context and curated histories must be after every
step, and at every version of every branch (time travel). At the end of each example a
fresh process rebuilds every branch at every version from the log and must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

import chatledger
from chatledger.client.transports.scripted import ScriptedTransport, text_response
from chatledger.errors import ChatStateError, ServerError

Contents = list[dict[str, Any]]
EMPTY_MODEL: dict[str, Any] = {"role": "model", "parts": []}


@dataclass
class Turn:
    user: dict[str, Any]
    model: dict[str, Any]
    valid: bool


@dataclass
class Reference:
    """A branch as plain lists: the completed turns, in order."""

    turns: list[Turn] = field(default_factory=list)

    def full(self) -> Contents:
        return [content for turn in self.turns for content in (turn.user, turn.model)]

    def context(self) -> Contents:
        return [content for turn in self.turns if turn.valid for content in (turn.user, turn.model)]

    def views(self) -> tuple[Contents, Contents, Contents]:
        context = self.context()
        return self.full(), context, context  # no function steps here: curated == context


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def _wire(contents: list[Any]) -> Contents:
    return [content.to_wire() for content in contents]


texts = st.text(alphabet="abcdefghij ", min_size=1, max_size=8)

_REBUILD = r"""
import json, sys
import chatledger
client = chatledger.Client(store=sys.argv[1])
out = {}
for key in json.loads(sys.argv[2]):
    conversation_id, version = key.rsplit("@", 1)
    chat = client.chats.get(conversation_id)
    wire = lambda contents: [c.to_wire() for c in contents]
    out[key] = [
        wire(chat.get_history(as_of=int(version))),
        wire(chat.get_context(as_of=int(version))),
        wire(chat.get_history(curated=True, as_of=int(version))),
    ]
print(json.dumps(out))
"""


class BranchingMachine(RuleBasedStateMachine):
    branches = Bundle("branches")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "log.db"
        self.transport = ScriptedTransport()
        self.client = chatledger.Client(
            store=str(self.path), transport=self.transport, busy_timeout=0
        )
        self.references: dict[str, Reference] = {}
        self.chats: dict[str, chatledger.Chat] = {}
        # (conversation id, version) -> the three histories at that version.
        self.expected: dict[tuple[str, int], tuple[Contents, Contents, Contents]] = {}

    # ----------------------------------------------------------------- bookkeeping

    def _record(self, chat: chatledger.Chat, before: int, after: Reference) -> None:
        """Versions inside the step show the state before it; its last version, after it."""
        previous = self.expected.get((chat.id, before))
        for version in range(before + 1, chat.version):
            assert previous is not None
            self.expected[(chat.id, version)] = previous
        self.expected[(chat.id, chat.version)] = after.views()

    @initialize(target=branches)
    def start(self) -> str:
        chat = self.client.chats.create(model="m")
        self.chats[chat.id] = chat
        self.references[chat.id] = Reference()
        self.expected[(chat.id, 1)] = Reference().views()
        return chat.id

    # ----------------------------------------------------------------- rules

    @rule(branch=branches, text=texts, kind=st.sampled_from(["valid", "empty", "none"]))
    def send(self, branch: str, text: str, kind: str) -> None:
        chat, reference = self.chats[branch], self.references[branch]
        before = chat.version
        if kind == "valid":
            self.transport.enqueue(f"re:{text}")
            model: dict[str, Any] = {"role": "model", "parts": [{"text": f"re:{text}"}]}
        elif kind == "empty":
            self.transport.enqueue(
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": []}, "finishReason": "STOP"}
                    ]
                }
            )
            model = EMPTY_MODEL
        else:
            self.transport.enqueue({"candidates": []})
            model = EMPTY_MODEL
        chat.send_message(text)
        reference.turns.append(Turn(_user(text), model, kind == "valid"))
        self._record(chat, before, reference)

    @rule(branch=branches, text=texts, pieces=st.integers(1, 3), finished=st.booleans())
    def stream(self, branch: str, text: str, pieces: int, finished: bool) -> None:
        chat, reference = self.chats[branch], self.references[branch]
        before = chat.version
        chunks: list[str | dict[str, Any]] = [
            text_response(f"p{i}", finish_reason=None) for i in range(pieces)
        ]
        if finished:
            chunks.append({"candidates": [{"finishReason": "STOP"}]})
        self.transport.enqueue(chunks=chunks)
        list(chat.send_message_stream(text))
        merged = {"parts": [{"text": "".join(f"p{i}" for i in range(pieces))}], "role": "model"}
        reference.turns.append(Turn(_user(text), merged, finished))
        self._record(chat, before, reference)

    @rule(branch=branches, text=texts)
    def fail(self, branch: str, text: str) -> None:
        chat = self.chats[branch]
        before = chat.version
        self.transport.enqueue(
            error=ServerError(
                503, {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}
            )
        )
        try:
            chat.send_message(text)
        except ServerError:
            pass
        else:  # pragma: no cover - the scripted error must surface
            raise AssertionError("the failure was swallowed")
        self._record(chat, before, self.references[branch])

    @rule(branch=branches, text=texts)
    def abandon(self, branch: str, text: str) -> None:
        chat = self.chats[branch]
        before = chat.version
        self.transport.enqueue(chunks=["first ", "never read"])
        stream = chat.send_message_stream(text)
        next(stream)
        stream.close()
        self._record(chat, before, self.references[branch])

    @rule(branch=branches)
    def rewind(self, branch: str) -> None:
        chat, reference = self.chats[branch], self.references[branch]
        before = chat.version
        if not reference.turns:
            try:
                chat.rewind()
            except ChatStateError:
                return
            raise AssertionError("rewind of an empty history must fail")
        user, model = chat.rewind()
        removed = reference.turns.pop()
        assert (user.to_wire(), model.to_wire()) == (removed.user, removed.model)
        self._record(chat, before, reference)

    @rule(target=branches, branch=branches, data=st.data())
    def fork(self, branch: str, data: st.DataObject) -> Any:
        chat = self.chats[branch]
        at = data.draw(st.integers(1, chat.version), label="at")
        child = chat.fork(at=at)
        expected = self.expected[(chat.id, at)]
        assert _wire(child.get_history()) == expected[0]
        # Rebuild the reference from the expected views at that version.
        turns = [
            Turn(u, m, False) for u, m in zip(expected[0][::2], expected[0][1::2], strict=True)
        ]
        context = expected[1]
        valid_pairs = list(zip(context[::2], context[1::2], strict=True))
        cursor = 0
        for turn in turns:
            if cursor < len(valid_pairs) and (turn.user, turn.model) == valid_pairs[cursor]:
                turn.valid = True
                cursor += 1
        reference = Reference(turns)
        assert reference.views() == expected
        self.chats[child.id] = child
        self.references[child.id] = reference
        self.expected[(child.id, 1)] = reference.views()
        return multiple(child.id)

    # ----------------------------------------------------------------- checks

    @invariant()
    def every_branch_matches_its_reference(self) -> None:
        for conversation_id, chat in self.chats.items():
            full, context, curated = self.references[conversation_id].views()
            assert _wire(chat.get_history()) == full
            assert _wire(chat.get_context()) == context
            assert _wire(chat.get_history(curated=True)) == curated

    def teardown(self) -> None:
        try:
            keys = [f"{cid}@{version}" for cid, version in self.expected]
            assert self.client.store.verify().ok
            # Time travel in this process, on a sample, and in a fresh process, for all.
            for (cid, version), views in list(self.expected.items())[
                :: max(1, len(self.expected) // 10)
            ]:
                chat = self.chats[cid]
                assert _wire(chat.get_history(as_of=version)) == views[0]
                assert _wire(chat.get_context(as_of=version)) == views[1]
            self.client.close()
            result = subprocess.run(
                [sys.executable, "-c", _REBUILD, str(self.path), json.dumps(keys)],
                capture_output=True,
                text=True,
                check=True,
            )
            rebuilt = json.loads(result.stdout)
            for (cid, version), views in self.expected.items():
                assert rebuilt[f"{cid}@{version}"] == list(views), (cid, version)
        finally:
            self.client.close()
            self.directory.cleanup()


BranchingMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_branching_matches_a_reference_at_every_version = BranchingMachine.TestCase
