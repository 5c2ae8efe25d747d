"""A Gemini-protocol server for load: answers every request after a fixed delay, counts
the TCP connections it accepts. Runs in a process of its own (asyncio and h11), so that
its work never shares the measured client's event loop or GIL.

    python -m benchmarks.loadserver --delay 0.05

prints its base URL on the first line of stdout, then answers commands on stdin, one per
line, with one JSON line on stdout:

- ``stats``: ``{"accepted", "requests", "open", "max_open", "streamed"}`` since the last
  reset (``accepted`` = new TCP connections the clients opened);
- ``reset``: zero the counters (connections still open stay open).

It exits when its stdin closes. ``generateContent`` gets ``corpus.model_response`` as one
JSON body; ``streamGenerateContent?alt=sse`` the same reply as ``corpus.STREAM_CHUNKS``
SSE events, written together once the delay has passed (the delay stands for the model's
time to first token). HTTP/1.1 keep-alive as a real server does it; the listen backlog is
large enough for every client to connect at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import h11

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402

__all__ = ["LoadServer"]

READ_SIZE = 65536
MAX_BODY = 64 * 1024 * 1024


class _Stats:
    def __init__(self) -> None:
        self.reset()
        self.open = 0

    def reset(self) -> None:
        self.accepted = 0
        self.requests = 0
        self.streamed = 0
        self.max_open = getattr(self, "open", 0)

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "requests": self.requests,
            "streamed": self.streamed,
            "open": self.open,
            "max_open": self.max_open,
        }


class _Replies:
    def __init__(self) -> None:
        turn = 3  # every reply is the same: what a mid-conversation reply looks like
        self.json = json.dumps(corpus.model_response(turn)).encode()
        self.sse = [
            b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
            for chunk in corpus.stream_chunks(turn)
        ]


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))
            continue
        return event


async def _serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stats: _Stats,
    replies: _Replies,
    delay: float,
) -> None:
    stats.accepted += 1
    stats.open += 1
    stats.max_open = max(stats.max_open, stats.open)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
    try:
        while True:
            request = await _next_event(conn, reader)
            if not isinstance(request, h11.Request):
                break  # ConnectionClosed (the client closed a kept-alive connection)
            while True:
                event = await _next_event(conn, reader)
                if isinstance(event, h11.EndOfMessage):
                    break
                if not isinstance(event, h11.Data):
                    return
            stats.requests += 1
            await asyncio.sleep(delay)
            if b":streamGenerateContent" in request.target:
                stats.streamed += 1
                headers = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
                out = conn.send(h11.Response(status_code=200, headers=headers)) or b""
                for chunk in replies.sse:
                    out += conn.send(h11.Data(data=chunk)) or b""
            else:
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(replies.json))),
                ]
                out = conn.send(h11.Response(status_code=200, headers=headers)) or b""
                out += conn.send(h11.Data(data=replies.json)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            writer.write(out)
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        pass
    finally:
        stats.open -= 1
        writer.close()


async def _main(delay: float) -> None:
    stats, replies = _Stats(), _Replies()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(reader, writer, stats, replies, delay)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def control() -> None:  # a thread: stdin commands, answered on the loop
        for line in sys.stdin:
            command = line.strip()
            answered = threading.Event()
            answer: dict[str, Any] = {}

            def run(
                command: str = command,
                answer: dict[str, Any] = answer,
                answered: threading.Event = answered,
            ) -> None:
                if command == "reset":
                    stats.reset()
                answer.update(stats.as_dict())
                answered.set()

            loop.call_soon_threadsafe(run)
            answered.wait()
            print(json.dumps(answer), flush=True)
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=control, daemon=True).start()
    async with server:
        await done


class LoadServer:
    """Starts the server in a child process; ``stats()`` and ``reset()`` ask it."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.base_url = ""
        self._process: Any = None

    def __enter__(self) -> LoadServer:
        import subprocess

        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loadserver", "--delay", str(self.delay)],
            cwd=str(ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self.__exit__()
            raise RuntimeError("the load server did not start")
        return self

    def _ask(self, command: str) -> dict[str, int]:
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the load server stopped")
        return dict(json.loads(line))

    def stats(self) -> dict[str, int]:
        return self._ask("stats")

    def reset(self) -> dict[str, int]:
        return self._ask("reset")

    def __exit__(self, *exc: Any) -> None:
        import subprocess

        if self._process is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each answer")
    asyncio.run(_main(parser.parse_args().delay))
