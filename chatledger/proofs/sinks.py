"""Where signed checkpoints go, so that the database's writers cannot change them.

A checkpoint kept only in the database it vouches for proves nothing: whoever can
rewrite the log can rewrite it too. Sinks put it elsewhere:

- :class:`FileSink`: appended to a file (one note after another, a blank line between),
  under an exclusive lock and fsynced; put the file on storage the writers cannot
  alter (another host, an append-only mount, a WORM bucket synced from it).
- :class:`StreamSink`: standard output (or any text stream), for a pipe or a cron mail.
- :class:`HttpSink`: POSTed to an HTTP(S) URL (a witness, a paste service, an audit
  inbox), with timeouts, no redirects and a bounded response; credentials in the URL or
  headers never reach a message or a log line.
- :class:`CommandSink`: given to a command on its standard input (``git commit``, ``aws
  s3 cp - ...``, ``logger``), with a timeout.

:class:`Checkpointer` signs the tree head every N events or T seconds from a background
thread and writes it to every sink.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TextIO
from urllib.parse import unquote, urlsplit

import httpx

from ..errors import ChatledgerError, InvalidInputError, holds_secret, redact, register_secret
from .checkpoint import make_checkpoint
from .merkle import TreeHead
from .note import DEFAULT_KEY_ENV, Signer

__all__ = [
    "CheckpointSink",
    "Checkpointer",
    "CommandSink",
    "FileSink",
    "HttpSink",
    "SinkError",
    "StreamSink",
    "sink_from_spec",
]

logger = logging.getLogger("chatledger.proofs")

#: The most bytes of a server's answer or a command's error output kept for a message.
MAX_RESPONSE_BYTES = 64 * 1024
_SNIPPET = 300
_SENSITIVE = ("auth", "key", "token", "secret", "cookie", "password", "credential", "session")
#: Variables chatledger reads secrets from, never passed to a sink's command (the signing
#: key; API keys; the database URL, which may hold a password). docs/proofs.md
COMMAND_HIDDEN_ENV = frozenset(
    {DEFAULT_KEY_ENV, "CHATLEDGER_DB", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"}
)


def command_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without chatledger's secrets: the variables
    in :data:`COMMAND_HIDDEN_ENV` and any variable whose value holds a registered secret
    (the loaded signing key, API keys, passwords in URLs)."""
    source = os.environ if environ is None else environ
    return {
        name: value
        for name, value in source.items()
        if name not in COMMAND_HIDDEN_ENV and not holds_secret(value)
    }


class SinkError(ChatledgerError):
    """A checkpoint could not be written to a sink. The log is unchanged; try again."""


class CheckpointSink(Protocol):
    """Somewhere a signed checkpoint note is written."""

    @property
    def description(self) -> str:
        """What the sink is, safe to show (no credentials)."""
        ...

    def write(self, note: str) -> None:
        """Write one signed note; raise SinkError if it was not written."""
        ...


def _snippet(data: bytes | str, *, tail: bool = False) -> str:
    """At most _SNIPPET characters of ``data`` (its end when ``tail``), secrets masked."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = redact(" ".join(text.split()))
    if len(text) > _SNIPPET:
        text = "..." + text[-_SNIPPET:] if tail else text[:_SNIPPET] + "..."
    return text


class FileSink:
    """Append each note to ``path``: a blank line between notes, locked, fsynced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def description(self) -> str:
        return f"file {self.path}"

    def write(self, note: str) -> None:
        data = note.encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(
                f"cannot open {self.path} to append a checkpoint: {exc.strerror}"
            ) from None
        try:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size:
                data = b"\n" + data
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            raise SinkError(
                f"cannot append the checkpoint to {self.path}: {exc.strerror}"
            ) from None
        finally:
            os.close(fd)


class StreamSink:
    """Write each note to a text stream (standard output by default)."""

    def __init__(self, stream: TextIO | None = None, name: str = "stdout") -> None:
        self._stream = stream
        self._name = name

    @property
    def description(self) -> str:
        return self._name

    def write(self, note: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(note)
            stream.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"cannot write the checkpoint to {self._name}: {exc}") from None


class HttpSink:
    """POST each note (``text/plain; charset=utf-8``) to an HTTP(S) URL.

    A 2xx answer is success. Redirects are not followed. ``timeout`` bounds connecting,
    each read and the whole request; at most ``max_response_bytes`` of the answer are read.
    A password in the URL and the values of credential-like headers are registered as
    secrets, and :attr:`description` shows the URL without user, password or query.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise InvalidInputError("the checkpoint URL must be a string")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(
                "a checkpoint URL starts with https:// (or http://) and names a host"
            )
        if parts.password:
            user, password = unquote(parts.username or ""), unquote(parts.password)
            register_secret(parts.password)
            register_secret(password)
            # httpx sends URL credentials as Basic auth: that token is the password too.
            register_secret(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))
        if parts.query:
            for pair in parts.query.split("&"):
                register_secret(pair.partition("=")[2])
        self._headers = dict(headers or {})
        if parts.username and any(name.lower() == "authorization" for name in self._headers):
            raise InvalidInputError(
                "give the checkpoint URL's credentials once: in the URL or in an "
                "Authorization header, not both"
            )
        for name, value in self._headers.items():
            if any(word in name.lower() for word in _SENSITIVE):
                register_secret(value)
                register_secret(value.removeprefix("Bearer ").strip())
        if not timeout > 0:
            raise InvalidInputError("the checkpoint URL's timeout must be positive")
        self._url = url
        self._timeout = float(timeout)
        self._max = max_response_bytes
        self._transport = transport
        port = f":{parts.port}" if parts.port else ""
        self._description = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"

    @property
    def description(self) -> str:
        return self._description

    def write(self, note: str) -> None:
        deadline = time.monotonic() + self._timeout
        headers = {"Content-Type": "text/plain; charset=utf-8", **self._headers}
        try:
            with (
                httpx.Client(
                    timeout=self._timeout, follow_redirects=False, transport=self._transport
                ) as client,
                client.stream(
                    "POST", self._url, content=note.encode("utf-8"), headers=headers
                ) as response,
            ):
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= self._max or time.monotonic() > deadline:
                        break
                status = response.status_code
        except httpx.TimeoutException:
            raise SinkError(
                f"{self._description} did not answer within {self._timeout:g} s; the "
                "checkpoint was not confirmed"
            ) from None
        except httpx.HTTPError as exc:
            raise SinkError(
                f"could not POST the checkpoint to {self._description}: "
                f"{type(exc).__name__}: {_snippet(str(exc))}"
            ) from None
        if not 200 <= status < 300:
            raise SinkError(
                f"{self._description} answered HTTP {status} to the checkpoint: "
                f"{_snippet(bytes(body[: self._max]))}"
            )


class CommandSink:
    """Run a command (no shell) with each note on its standard input; exit 0 is success.

    The command runs without chatledger's secrets in its environment (see
    :func:`command_environment`): it never sees the signing key or an API key, and its
    error output is shown with registered secrets masked.
    """

    def __init__(self, command: Sequence[str] | str, *, timeout: float = 30.0) -> None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv or not all(isinstance(arg, str) and arg for arg in argv):
            raise InvalidInputError("a checkpoint command is a non-empty list of arguments")
        if not timeout > 0:
            raise InvalidInputError("the checkpoint command's timeout must be positive")
        self._argv = argv
        self._timeout = float(timeout)

    @property
    def description(self) -> str:
        return f"command {Path(self._argv[0]).name}"

    def write(self, note: str) -> None:
        with tempfile.TemporaryFile() as errors:
            try:
                completed = subprocess.run(
                    self._argv,
                    input=note.encode("utf-8"),
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    timeout=self._timeout,
                    check=False,
                    env=command_environment(),
                )
            except subprocess.TimeoutExpired:
                raise SinkError(
                    f"the {self.description} did not finish within {self._timeout:g} s and was "
                    "stopped; the checkpoint was not confirmed"
                ) from None
            except OSError as exc:
                raise SinkError(f"cannot run the {self.description}: {exc.strerror}") from None
            if completed.returncode != 0:
                size = errors.seek(0, os.SEEK_END)
                errors.seek(max(0, size - 2048))
                tail = errors.read(2048)
                raise SinkError(
                    f"the {self.description} exited with status {completed.returncode}: "
                    f"{_snippet(tail, tail=True) or 'no error output'}"
                )


def sink_from_spec(spec: str) -> CheckpointSink:
    """A sink from its command-line form.

    ``-`` or ``stdout``; ``https://...`` or ``http://...``; ``exec:COMMAND ARGS`` (split
    as a shell would, run without one); ``file:PATH`` or any other text, a file path.
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError("a checkpoint destination is -, a URL, exec:COMMAND or a path")
    if spec in ("-", "stdout"):
        return StreamSink()
    if spec.startswith(("https://", "http://")):
        return HttpSink(spec)
    if spec.startswith("exec:"):
        return CommandSink(spec[5:])
    if spec.startswith("file:"):
        return FileSink(spec[5:])
    return FileSink(spec)


class Checkpointer:
    """Sign the tree head every ``every_events`` events or ``every_seconds`` seconds.

    ``head`` returns the current :class:`TreeHead` (for a store: its size and root). A
    background thread wakes every ``poll_seconds`` (or when :meth:`notify` counts enough
    new events), and when the tree grew by ``every_events`` since the last checkpoint, or
    grew at all and ``every_seconds`` have passed, signs it and writes it to every sink.
    A failing sink does not stop the others or the thread: the error is logged (with
    secrets masked) and kept in :attr:`last_error`, and the next round tries again.
    """

    def __init__(
        self,
        head: Callable[[], TreeHead],
        signer: Signer,
        sinks: Iterable[CheckpointSink],
        *,
        every_events: int | None = None,
        every_seconds: float | None = None,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._sinks = list(sinks)
        if not self._sinks:
            raise InvalidInputError("a checkpointer needs at least one sink")
        if every_events is None and every_seconds is None:
            raise InvalidInputError("give every_events, every_seconds or both")
        if every_events is not None and (
            isinstance(every_events, bool) or not isinstance(every_events, int) or every_events < 1
        ):
            raise InvalidInputError("every_events must be a positive integer")
        if every_seconds is not None and not every_seconds > 0:
            raise InvalidInputError("every_seconds must be positive")
        if not poll_seconds > 0:
            raise InvalidInputError("poll_seconds must be positive")
        self._head = head
        self._signer = signer
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._now = now or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._last_head: TreeHead | None = None
        self._last_time = clock()
        self.last_note: str | None = None
        """The last checkpoint written (to at least one sink)."""
        self.last_error: ChatledgerError | None = None
        """The last failure of a round, or None after a round that wrote to every sink."""
        self.written = 0
        """How many checkpoints were signed and written."""

    # -- control --------------------------------------------------------------------------

    def start(self) -> Checkpointer:
        """Start the background thread (once)."""
        if self._thread is not None:
            raise InvalidInputError("this checkpointer was already started")
        self._thread = threading.Thread(
            target=self._run, name="chatledger-checkpointer", daemon=True
        )
        self._thread.start()
        return self

    def notify(self, count: int = 1) -> None:
        """Say that ``count`` events were appended (wakes the thread when enough were)."""
        with self._lock:
            self._pending += count
            due = self.every_events is not None and self._pending >= self.every_events
        if due:
            self._wake.set()

    def stop(self, *, final: bool = True, timeout: float = 30.0) -> None:
        """Stop the thread; with ``final``, sign the head once more if it moved."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final:
            with contextlib.suppress(ChatledgerError):
                self._round(force_if_moved=True)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Checkpointer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- work -----------------------------------------------------------------------------

    def checkpoint_now(self) -> str:
        """Sign the current head and write it to every sink; raise SinkError if any failed."""
        head = self._head()
        return self._write(head)

    def _write(self, head: TreeHead) -> str:
        _, note = make_checkpoint(head, self._signer, time=self._now())
        failures = []
        for sink in self._sinks:
            try:
                sink.write(note)
            except SinkError as exc:
                failures.append(exc.message)
            except Exception as exc:  # a custom sink's own error
                failures.append(f"{sink.description}: {type(exc).__name__}: {_snippet(str(exc))}")
        with self._lock:
            if len(failures) < len(self._sinks):
                self._last_head = head
                self._last_time = self._clock()
                self._pending = 0
                self.last_note = note
                self.written += 1
        if failures:
            error = SinkError(
                f"the checkpoint at size {head.size} was not written to "
                f"{len(failures)} of {len(self._sinks)} destinations: " + "; ".join(failures)
            )
            self.last_error = error
            raise error
        self.last_error = None
        return note

    def _due(self, head: TreeHead, force_if_moved: bool) -> bool:
        last = self._last_head
        moved = last is None or head != last
        if not moved:
            return False
        if force_if_moved:
            return True
        grown = head.size - (last.size if last is not None else 0)
        if self.every_events is not None and grown >= self.every_events:
            return True
        return (
            self.every_seconds is not None and self._clock() - self._last_time >= self.every_seconds
        )

    def _round(self, *, force_if_moved: bool = False) -> None:
        try:
            head = self._head()
            if self._due(head, force_if_moved):
                self._write(head)
        except ChatledgerError as exc:
            self.last_error = exc
            logger.warning("checkpoint failed: %s", exc.message)
            raise

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._round()
            except ChatledgerError:
                continue
            except Exception as exc:  # the head function failed: keep going, say so
                self.last_error = SinkError(
                    f"reading the tree head failed: {type(exc).__name__}: {_snippet(str(exc))}"
                )
                logger.warning("checkpoint failed: %s", self.last_error.message)
