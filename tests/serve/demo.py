"""A small log with something on every page: Markdown replies, a function call, a failed
attempt that was retried, a fork that went another way, and several actors. Written
through the public API with the scripted transport (no network, no model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.errors import ServerError

USAGE = {"promptTokenCount": 42, "candidatesTokenCount": 58, "totalTokenCount": 100}


def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order's shipping status.

    Args:
        order_id: The order number.
    """
    return {"order_id": order_id, "status": "in transit", "carrier": "DHL", "eta": "2026-12-09"}


@dataclass
class Demo:
    support: str
    fork: str
    others: list[str]


def _reply(text: str) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": USAGE,
        "modelVersion": "gemini-2.5-flash",
    }


def build_demo(store: Any) -> Demo:
    """Write the demo conversations into ``store`` (a path, URL or store object)."""
    scripted = ScriptedTransport()
    client = chatledger.Client(
        store=store,
        transport=scripted,
        actor="carol",
        http_options={"retry_options": {"attempts": 2, "initial_delay": 0.01, "jitter": 0}},
    )
    call = {"functionCall": {"name": "lookup_order", "args": {"order_id": "1042"}}}
    scripted.enqueue({"candidates": [{"content": {"role": "model", "parts": [call]}}]})
    scripted.enqueue(
        _reply(
            "Your order **#1042** is *in transit* with DHL.\n\n"
            "| step | date |\n|---|---|\n| shipped | 2026-12-05 |\n| expected | 2026-12-09 |\n\n"
            "Track it with `DHL 00340434161094042557`."
        )
    )
    scripted.enqueue(
        error=ServerError(
            503,
            {
                "error": {
                    "code": 503,
                    "status": "UNAVAILABLE",
                    "message": "The model is overloaded.",
                }
            },
        )
    )
    scripted.enqueue(
        _reply(
            "I have asked the warehouse to **expedite** it:\n\n1. priority handling\n2. next-day delivery"
        )
    )
    scripted.enqueue(_reply("Done: the order is **cancelled** and the refund is on its way."))
    for text in (
        "A ledger is an append-only record of transactions.",
        "Bonjour ! Voici un résumé en trois points.",
        "Here is a haiku:\n\n> logs never forget\n> each event chained to the last\n> truth in a hash line",
    ):
        scripted.enqueue(_reply(text))

    with chatledger.acting_as("alice"):
        support = client.chats.create(
            model="gemini-2.5-flash",
            config={"system_instruction": "You are a support agent.", "tools": [lookup_order]},
        )
        support.send_message("My order #1042 hasn't arrived. Can you check where it is?")
    with chatledger.acting_as("bob"):
        support.send_message("Can you expedite it, please?")
    with chatledger.acting_as("alice"):
        fork = support.fork(turn=1)
        fork.send_message("Actually, please cancel it.")
    others = []
    for actor, model, message in (
        ("dave", "local", "What is a ledger?"),
        ("erin", "gemini-2.5-pro", "Résume ce document en trois points."),
        ("dave", "local", "Write a haiku about audit logs."),
    ):
        with chatledger.acting_as(actor):
            chat = client.chats.create(model=model)
            chat.send_message(message)
            others.append(chat.id)
    client.close()
    return Demo(support=support.id, fork=fork.id, others=others)
