"""A Gemini-protocol server on loopback that answers at once, in its own process.

It reuses the test suite's scripted server (tests/support/gemini_server.py) with a handler
that answers every ``generateContent`` with the canned reply of ``corpus.model_response``
and every ``streamGenerateContent`` with the same reply as SSE chunks, so it never runs out
of scripted replies. Two differences from the test server, both so that the server costs
the client as little as possible: it runs in a separate process (its Python work does not
take the client's GIL), and it sets TCP_NODELAY (without it, the server's two writes per
reply meet delayed ACKs and every reply waits about 40 ms).

    with LoopbackServer() as server:
        server.base_url
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["LoopbackServer"]


def _serve() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import corpus
    from tests.support.gemini_server import GeminiServer, Reply
    from tests.support.scripted_server import _Handler

    turn = 3  # every reply is the same: what a mid-conversation reply looks like
    generate = json.dumps(corpus.model_response(turn)).encode()
    chunks = corpus.stream_chunks(turn)

    class InstantHandler(_Handler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path.split("?", 1)[0].endswith(":streamGenerateContent"):
                self._send_sse(Reply("sse", chunks=chunks))
            else:
                self._send_bytes(200, generate, "application/json")

    server = GeminiServer()
    server._server.RequestHandlerClass = InstantHandler
    server.start()
    print(server.base_url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin (or dies)
    server.stop()


class LoopbackServer:
    """Starts ``_serve`` in a child process and stops it on exit."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> LoopbackServer:
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from benchmarks.loopback import _serve; _serve()"],
            cwd=str(ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self.__exit__()
            raise RuntimeError("the loopback Gemini server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
