"""Server-sent events: the ``data`` of each event of a streamed answer, read within the
request's budget (see :mod:`._http`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Generator

import httpx

from ._http import RequestBudget, aiter_bytes

__all__ = ["aiter_sse_data", "iter_sse_data"]


class _LineSplitter:
    """Bytes in, SSE lines out.

    Lines end with CRLF, LF or CR (the text/event-stream format) and nothing else:
    httpx's ``iter_lines`` also splits on U+2028, U+2029 and U+0085, which JSON allows
    unescaped inside strings (and model output does contain them), so it would cut a
    data line in two. What it holds is bounded by the request's byte budget.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        buffer = self._buffer
        # What is already buffered holds no line end, except maybe a last "\r" whose
        # "\n" may come now: only that byte and the new ones are searched.
        position = max(0, len(buffer) - 1)
        buffer += data
        size = len(buffer)
        lines: list[str] = []
        start = 0
        while True:
            lf = buffer.find(b"\n", position)
            cr = buffer.find(b"\r", position, size if lf < 0 else lf)
            if cr >= 0:
                if cr + 1 == size:
                    break  # maybe the first half of "\r\n": wait for the next piece
                end, position = cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            elif lf >= 0:
                end, position = lf, lf + 1
            else:
                break
            lines.append(buffer[start:end].decode("utf-8", "replace"))
            start = position
        if start:
            del buffer[:start]
        return lines

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, bytearray()
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        elif not rest:
            return []
        return [rest.decode("utf-8", "replace")]


class _EventReader:
    """Collects ``data:`` lines into events (the text/event-stream format)."""

    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._data: list[str] = []

    def _line(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        # Anything else (a comment, event, id, retry, an unknown field) is not data: the
        # format says to ignore it. A stream of nothing else is no answer, which the
        # transports refuse when it ends.
        return None

    def feed(self, piece: bytes) -> list[str]:
        return [data for line in self._lines.feed(piece) if (data := self._line(line)) is not None]

    def flush(self) -> list[str]:
        lines = [*self._lines.flush(), ""]
        return [data for line in lines if (data := self._line(line)) is not None]


def iter_sse_data(response: httpx.Response, budget: RequestBudget) -> Generator[str, None, None]:
    """The ``data`` of each event of an SSE response opened by :func:`open_response`."""
    reader = _EventReader()
    for piece in response.iter_bytes():
        budget.take(piece)
        yield from reader.feed(piece)
    # A stream read to the end of the connection may have been ended by the watchdog.
    budget.check()
    yield from reader.flush()


async def aiter_sse_data(
    response: httpx.Response, budget: RequestBudget
) -> AsyncGenerator[str, None]:
    """As :func:`iter_sse_data`, for a response opened by :func:`aopen_response`."""
    reader = _EventReader()
    async with contextlib.aclosing(aiter_bytes(response, budget)) as pieces:
        async for piece in pieces:
            for data in reader.feed(piece):
                yield data
    for data in reader.flush():
        yield data
