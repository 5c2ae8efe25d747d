"""What the pages compute from a real log: turns, event lines, the tree's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import ServerError
from chatledger.events.kinds import KINDS
from chatledger.serve.views import (
    EVENT_TYPES,
    common_prefix,
    draw_tree,
    summarize_event,
    turn_rows,
)

from .demo import build_demo


def test_every_event_kind_has_a_filter_and_a_summary(tmp_path: Path) -> None:
    assert set(EVENT_TYPES) == set(KINDS)
    demo = build_demo(str(tmp_path / "demo.db"))
    with chatledger.Client(store=str(tmp_path / "demo.db")) as client:
        events = client.store.read(demo.support)
    lines = [summarize_event(event) for event in events]
    assert lines[0] == 'model gemini-2.5-flash, system "You are a support agent."'
    assert lines[1] == 'turn 1: "My order #1042 hasn\'t arrived. Can you check where it is?"'
    assert lines[3].startswith("turn 1: calls lookup_order (")
    assert lines[4] == 'turn 1: lookup_order({"order_id":"1042"})'
    assert lines[5].startswith('turn 1: lookup_order → {"result":{"order_id":"1042"')
    assert lines[10] == "turn 2: ServerError 503 UNAVAILABLE: The model is overloaded."
    assert "100 tokens" in lines[-1]


def test_turn_rows_tell_each_turn_s_story(tmp_path: Path) -> None:
    scripted = ScriptedTransport()
    client = chatledger.Client(
        store=str(tmp_path / "t.db"),
        transport=scripted,
        http_options={"retry_options": {"attempts": 2, "initial_delay": 0.01, "jitter": 0}},
    )
    usage = {"totalTokenCount": 30}
    reply = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": usage,
    }
    overloaded = ServerError(
        503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "busy"}}
    )
    scripted.enqueue(error=overloaded).enqueue(reply)  # retried, then fine
    scripted.enqueue(reply)  # rewound later
    scripted.enqueue(error=overloaded).enqueue(error=overloaded)  # failed for good
    with chatledger.acting_as("ann"):
        chat = client.chats.create(model="gemini-2.5-flash")
        chat.send_message("one")
    with chatledger.acting_as("ben"):
        chat.send_message("two")
        chat.rewind()
        with pytest.raises(ServerError):
            chat.send_message("three")
    rows = turn_rows(chat.events())
    assert [(r.turn, r.text, r.actor, r.outcome) for r in rows] == [
        (1, "one", "ann", "completed"),
        (2, "two", "ben", "rewound"),
        (3, "three", "ben", "failed"),
    ]
    assert rows[0].attempts == 2 and rows[0].tokens == 30
    assert rows[0].failures == ["attempt 1: ServerError 503 UNAVAILABLE: busy"]
    assert rows[2].attempts == 2 and len(rows[2].failures) == 2 and rows[2].tokens is None
    assert rows[0].models == ["gemini-2.5-flash"]
    assert (rows[0].first_version, rows[0].last_version) == (2, 6)
    client.close()


def test_the_tree_is_drawn_one_row_per_branch(tmp_path: Path) -> None:
    scripted = ScriptedTransport()
    with chatledger.Client(store=str(tmp_path / "tree.db"), transport=scripted) as client:
        root = client.chats.create(model="m")
        scripted.enqueue("a").enqueue("b").enqueue("c")
        root.send_message("start")
        left = root.fork()
        left.send_message("left way")
        deeper = left.fork()
        right = root.fork(at=1)
        right.send_message("right way")
        tree = client.chats.tree(deeper.id)
        drawing = draw_tree(tree, deeper.id)
    ids = [node.conversation_id for node in drawing.nodes]
    assert ids[0] == root.id and set(ids) == {root.id, left.id, deeper.id, right.id}
    assert [n.current for n in drawing.nodes] == [i == deeper.id for i in ids]
    xs = {node.conversation_id: node.x for node in drawing.nodes}
    assert xs[left.id] == xs[right.id] > xs[root.id] and xs[deeper.id] > xs[left.id]
    ys = [node.y for node in drawing.nodes]
    assert ys == sorted(ys) and len(set(ys)) == 4
    assert drawing.nodes[0].path == ""
    by_id = {node.conversation_id: node for node in drawing.nodes}
    parent = by_id[left.id]
    assert by_id[deeper.id].path.startswith(f"M{parent.x},{parent.y + 6} V{by_id[deeper.id].y}")
    assert "at v1" in by_id[right.id].label and by_id[right.id].detail == "right way"
    assert drawing.height > max(ys) and drawing.omitted == 0
    small = draw_tree(tree, root.id, limit=2)
    assert len(small.nodes) == 2 and small.omitted == 2


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([{"a": 1}], [{"a": 1}]) == 1
