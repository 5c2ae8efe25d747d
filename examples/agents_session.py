"""An OpenAI Agents SDK agent whose session history is chatledger's log.

    pip install 'chatledger[agents]'
    python examples/agents_session.py [--db PATH]

With OPENAI_API_KEY set the agent talks to OpenAI's gpt-4.1-mini; without it, to a tiny
offline model written below (it answers with what it was sent), so the example runs
anywhere. Either way every item of the session is an event in the log: the runs, a
pop_item (an event: nothing is deleted), a fork, the session as it was at an earlier
version, and verify.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, ModelResponse, Runner, Usage, set_tracing_disabled
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

import chatledger
from chatledger.integrations.agents import ChatledgerSession


class RecallModel(Model):
    """Offline stand-in: says how many items it was sent and repeats the first one."""

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        first = items[0].get("content")
        text = f"I was sent {len(items)} items; the first said {first!r}."
        message = ResponseOutputMessage(
            id="msg_offline",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("this offline model does not stream")


async def main() -> None:
    parser = argparse.ArgumentParser(description="openai-agents sessions in chatledger's log")
    parser.add_argument("--db", default="agents.db", help="SQLite file (or URL) for the log")
    args = parser.parse_args()

    online = bool(os.environ.get("OPENAI_API_KEY"))
    if not online:
        set_tracing_disabled(True)  # offline: nothing to export traces to
    agent = Agent(
        name="concierge",
        instructions="Answer in one short sentence.",
        model="gpt-4.1-mini" if online else RecallModel(),
    )

    with chatledger.Client(store=args.db, actor="example") as client:
        session = ChatledgerSession("concierge-1", client)
        await session.clear_session()  # a fresh start on every run of the example (an event too)
        for question in ("My name is Ada.", "What is my name?"):
            result = await Runner.run(agent, question, session=session)
            print(f"> {question}\n{result.final_output}")

        items = await session.get_items()
        print(f"\nthe session holds {len(items)} items (version {session.version})")
        popped = await session.pop_item()
        print(f"pop_item took back the last answer: {popped is not None}")

        branch = await session.fork()  # a new session id; the fork names its parent
        result = await Runner.run(agent, "Tell me a joke instead.", session=branch)
        print(f"\nfork {branch.session_id[:8]}, from the same items: {result.final_output}")

        earlier = await session.get_items_as_of(session.version - 1)
        print(f"before the pop the session held {len(earlier)} items")

        print("\nthe log of the session:")
        for event in await session.events():
            print(f"  v{event.version:<3} {event.type:<22} {event.actor}")
        print(f"verify: {'ok' if (await session.verify()).ok else 'FAILED'}")
        print(f"\nsee it with: chatledger --db {args.db} log concierge-1")


if __name__ == "__main__":
    asyncio.run(main())
