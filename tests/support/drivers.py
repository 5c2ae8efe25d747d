"""Drive a sync Chat or an AsyncChat through the same calls, so one scenario suite covers both."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import chatledger
from chatledger.types import Content, GenerateContentResponse

T = TypeVar("T")


class SyncDriver:
    name = "sync"

    def create(self, client: chatledger.Client, **kwargs: Any) -> chatledger.Chat:
        return client.chats.create(**kwargs)

    def get(
        self, client: chatledger.Client, conversation_id: str, **kwargs: Any
    ) -> chatledger.Chat:
        return client.chats.get(conversation_id, **kwargs)

    def send(self, chat: Any, message: Any, config: Any = None) -> GenerateContentResponse:
        response: GenerateContentResponse = chat.send_message(message, config=config)
        return response

    def stream(
        self, chat: Any, message: Any, config: Any = None, stop_after: int | None = None
    ) -> list[GenerateContentResponse]:
        chunks: list[GenerateContentResponse] = []
        stream = chat.send_message_stream(message, config=config)
        try:
            for chunk in stream:
                chunks.append(chunk)
                if stop_after is not None and len(chunks) >= stop_after:
                    break
        finally:
            stream.close()
        return chunks

    def rewind(self, chat: Any) -> tuple[Content, Content]:
        result: tuple[Content, Content] = chat.rewind()
        return result

    def events(self, chat: Any) -> list[chatledger.RecordedEvent]:
        events: list[chatledger.RecordedEvent] = chat.events()
        return events

    def close(self, client: chatledger.Client) -> None:
        client.close()


class AsyncDriver:
    name = "async"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def create(self, client: chatledger.Client, **kwargs: Any) -> chatledger.AsyncChat:
        return client.aio.chats.create(**kwargs)

    def get(
        self, client: chatledger.Client, conversation_id: str, **kwargs: Any
    ) -> chatledger.AsyncChat:
        return client.aio.chats.get(conversation_id, **kwargs)

    def send(self, chat: Any, message: Any, config: Any = None) -> GenerateContentResponse:
        return self.run(chat.send_message(message, config=config))  # type: ignore[no-any-return]

    def stream(
        self, chat: Any, message: Any, config: Any = None, stop_after: int | None = None
    ) -> list[GenerateContentResponse]:
        async def consume() -> list[GenerateContentResponse]:
            chunks: list[GenerateContentResponse] = []
            stream = await chat.send_message_stream(message, config=config)
            try:
                async for chunk in stream:
                    chunks.append(chunk)
                    if stop_after is not None and len(chunks) >= stop_after:
                        break
            finally:
                await stream.aclose()
            return chunks

        return self.run(consume())

    def rewind(self, chat: Any) -> tuple[Content, Content]:
        return self.run(chat.rewind())  # type: ignore[no-any-return]

    def events(self, chat: Any) -> list[chatledger.RecordedEvent]:
        return self.run(chat.events())

    def close(self, client: chatledger.Client) -> None:
        self.run(client.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
