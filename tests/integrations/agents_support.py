"""A scripted model for real openai-agents runs, offline.

The SDK's own test suite drives its ``Runner`` with a ``FakeModel`` (``tests/fake_model.py``
of openai/openai-agents-python) that is not shipped in the wheel; this is the same idea,
written here: an ``agents.models.interface.Model`` that returns the outputs queued with
:meth:`FakeModel.set_next_output` and remembers the arguments of the last call
(``last_turn_args["input"]`` is what the agent sent: the session's items plus the new
input). Both the plain and the streamed paths of the Runner are served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Runner
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.tool import Tool
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

__all__ = ["FakeModel", "function_call", "run_agent", "text_message"]


def text_message(content: str) -> ResponseOutputMessage:
    """An assistant message with one output text, as the Responses API returns it."""
    return ResponseOutputMessage(
        id="1",
        type="message",
        role="assistant",
        content=[ResponseOutputText(text=content, type="output_text", annotations=[])],
        status="completed",
    )


def function_call(name: str, arguments: str, call_id: str = "call_1") -> ResponseFunctionToolCall:
    """A function tool call, as the Responses API returns it."""
    return ResponseFunctionToolCall(
        id="fc_1", call_id=call_id, type="function_call", name=name, arguments=arguments
    )


class FakeModel(Model):
    """Returns queued outputs; raises a queued exception."""

    def __init__(self) -> None:
        self.turn_outputs: list[list[TResponseOutputItem] | Exception] = []
        self.last_turn_args: dict[str, Any] = {}
        self.calls = 0

    def set_next_output(self, output: list[TResponseOutputItem] | Exception) -> None:
        self.turn_outputs.append(output)

    def _next(self, input: str | list[TResponseInputItem], **args: Any) -> list[Any]:
        self.calls += 1
        self.last_turn_args = {"input": input, **args}
        output = self.turn_outputs.pop(0) if self.turn_outputs else []
        if isinstance(output, Exception):
            raise output
        return list(output)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any | None,
    ) -> ModelResponse:
        output = self._next(input, system_instructions=system_instructions, tools=tools)
        return ModelResponse(output=output, usage=Usage(), response_id="resp-789")

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any | None = None,
    ) -> AsyncIterator[ResponseStreamEvent]:
        output = self._next(input, system_instructions=system_instructions, tools=tools)
        response = Response(
            id="resp-789",
            created_at=123,
            model="test_model",
            object="response",
            output=output,
            tool_choice="none",
            tools=[],
            top_p=None,
            parallel_tool_calls=False,
            usage=ResponseUsage(
                input_tokens=0,
                output_tokens=0,
                total_tokens=0,
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        )
        sequence = 0
        yield ResponseCreatedEvent(
            type="response.created", response=response, sequence_number=sequence
        )
        for index, item in enumerate(output):
            sequence += 1
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added",
                item=item,
                output_index=index,
                sequence_number=sequence,
            )
            sequence += 1
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                item=item,
                output_index=index,
                sequence_number=sequence,
            )
        sequence += 1
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=sequence
        )


def _run_sync_in_thread(agent: Agent[Any], input_data: Any, **kwargs: Any) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, input_data, **kwargs)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def run_agent(method: str, agent: Agent[Any], input_data: Any, **kwargs: Any) -> Any:
    """Run ``agent`` with ``Runner.run``, ``Runner.run_sync`` (in a thread with its own
    event loop) or ``Runner.run_streamed`` (consuming every event)."""
    if method == "run":
        return await Runner.run(agent, input_data, **kwargs)
    if method == "run_sync":
        return await asyncio.to_thread(_run_sync_in_thread, agent, input_data, **kwargs)
    if method == "run_streamed":
        result = Runner.run_streamed(agent, input_data, **kwargs)
        async for _event in result.stream_events():
            pass
        return result
    raise ValueError(f"unknown runner method {method}")
