"""The real ``python -m llama_cpp.server`` with SmolLM2, on a free loopback port, for the
tests that need a real OpenAI-compatible server (extra ``server``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatledger.client.transports.local import find_model_path

__all__ = ["llama_server"]

#: How long the server may take to load the model and answer ``GET /v1/models``.
STARTUP_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def llama_server(log_dir: Path, *arguments: str) -> Iterator[str]:
    """Run the server (with ``arguments`` added, e.g. ``--chat_format ...``) until the
    block ends; yield its base URL (``http://127.0.0.1:<port>/v1``). The test fails,
    quoting the server's log, if it exits or is not ready within
    :data:`STARTUP_SECONDS`."""
    port = _free_port()
    log_path = log_dir / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(find_model_path()),
        *arguments,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {process.returncode} before it was ready:\n"
                    + log_path.read_text(errors="replace")[-5000:]
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer GET /v1/models within {STARTUP_SECONDS} s:\n"
                    + log_path.read_text(errors="replace")[-5000:]
                )
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
