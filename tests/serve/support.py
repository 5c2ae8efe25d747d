"""Run ``chatledger serve``'s app on a real loopback port for tests: uvicorn in a thread
(in process, so the scripted transport can be used), or the real command in a
subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import chatledger
from chatledger.serve.app import create_app
from chatledger.serve.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    """A running server: its base URL, its app's state, and an HTTP client for it."""

    base_url: str
    client: chatledger.Client
    app: Any
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, timeout=30.0)

    @property
    def state(self) -> Any:
        return self.app.state.serve

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[1]

    def api_post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        """A JSON POST, as an API client sends it."""
        return self.http.post(path, json=body if body is not None else {}, **kwargs)


@contextmanager
def serve_in_thread(
    client: chatledger.Client, settings: ServeSettings | None = None, **uvicorn_options: Any
) -> Iterator[Served]:
    """Start the app on 127.0.0.1 and an ephemeral port; stop it afterwards."""
    app = create_app(client, settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=2,
        **uvicorn_options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    served = Served(f"http://127.0.0.1:{port}", client, app)
    try:
        yield served
    finally:
        served.http.close()
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """``chatledger serve`` running as a subprocess."""

    process: subprocess.Popen[str]
    base_url: str
    output: list[str]

    def text(self) -> str:
        return "".join(self.output)


@contextmanager
def serve_subprocess(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[Process]:
    """Run ``chatledger <args>`` (which include ``serve``) and wait until it answers."""
    port = free_port()
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from chatledger.cli import main; main()",
            *args,
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(
        target=lambda: output.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                reader.join(timeout=5)
                raise RuntimeError(f"chatledger serve exited: {''.join(output)}")
            try:
                httpx.get(base_url + "/api/health", timeout=1.0, headers={"Host": "127.0.0.1"})
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"chatledger serve did not start: {''.join(output)}"
                    ) from None
                time.sleep(0.1)
        yield Process(process, base_url, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, str | None]]:
    """Parse server-sent events: yields (event, data, id) for each one."""
    event = "message"
    data: list[str] = []
    event_id: str | None = None
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)
