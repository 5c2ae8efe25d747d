"""The crash harness: SIGKILL a writer at chosen points inside an operation, then check
that nothing was lost, nothing half-written is visible, and the conversation goes on.

How a kill point is chosen. The operation runs in a child process (forked from a
``forkserver`` that has chatledger imported, so a child costs a fork, not an import).
The child counts *steps* while the operation runs: every line of Python executed in
chatledger, httpx and psycopg (``sys.settrace``) and, on SQLite, every 20 virtual-machine
instructions inside the sqlite3 library (its progress handler, which runs inside a
statement, including COMMIT). A first run counts the operation's steps without killing;
then, for kill point ``k``, the child sends itself SIGKILL at step ``k``: the same as
``kill -9`` arriving at that instant, with no chance to clean up, flush or roll back. The
kill points are spread over the whole operation (a seeded random sample of its steps).

What is checked after every kill, in the parent (a different process, with a new client):

* the events committed before the operation are all still there, unchanged (``events
  lost`` counts any that are not);
* ``verify`` passes on the conversation and on any fork the operation made;
* every event decodes, and the projections rebuild: the full and curated histories of
  a freshly opened chat equal the ones folded from scratch (``as_of`` the head);
* the conversation can be resumed and sent to (the dead writer's open turn is closed);
* every request the resumed chat sends is valid: no function call without its
  response, no user message twice.

Anything else is counted as a broken invariant. The model is a loopback Gemini-protocol
server that answers instantly and deterministically (text, SSE chunks, or function
calls when tools are declared).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import chatledger

API_KEY = "crash-harness-key-0000"
MODEL = "gemini-2.5-flash"
OPERATIONS = (
    "send_message",
    "send_message_stream",
    "function_calling",
    "fork",
    "rewind",
    "continuation",
    "continuation_stream",
)
LONG = "[long]"  # a message with this asks for a long answer: two continuation hops
CONTINUATION_TOKEN = "aG9wLTE="  # URL-safe base64 of b"hop-1", as google-genai sends it
FUNCTION_ROUNDS = 2  # the model asks for a function this many times before answering


# ----------------------------------------------------------------------------- the model


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # a killed client
            self.close_connection = True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            self.server.requests.append(body)
        reply = _answer(body)
        if self.path.split("?")[0].endswith(":streamGenerateContent"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in _as_chunks(reply):
                data = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
                self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    contents = body.get("contents") or []
    last_user_text = ""
    rounds = 0
    for content in reversed(contents):
        parts = content.get("parts") or []
        if content.get("role") == "user" and any("functionResponse" in p for p in parts):
            rounds += 1
            continue
        if content.get("role") == "user":
            last_user_text = "".join(p.get("text", "") for p in parts)
            break
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}
    if LONG in last_user_text and body.get("continuationToken") != CONTINUATION_TOKEN:
        # The first hop of a long answer: paused, to be resumed with the token.
        candidate = {
            "content": {"role": "model", "parts": [{"text": "first half of the reply"}]},
            "finishReason": "CONTINUATION",
            "continuationToken": CONTINUATION_TOKEN,
        }
        return {"candidates": [candidate], "usageMetadata": usage}
    if body.get("tools") and rounds < FUNCTION_ROUNDS:
        call = {"functionCall": {"name": "lookup", "args": {"city": f"c{rounds}"}}}
        parts = [call]
    else:
        parts = [{"text": f"reply to {last_user_text}"}]
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": usage,
    }


def _as_chunks(reply: dict[str, Any]) -> list[dict[str, Any]]:
    candidate = reply["candidates"][0]
    parts = candidate["content"]["parts"]
    if "text" not in parts[0]:
        return [reply]
    words = parts[0]["text"].split(" ")
    chunks = []
    for index, word in enumerate(words):
        text = word if index == 0 else " " + word
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]
        }
        if index == len(words) - 1:
            for key in ("finishReason", "continuationToken"):
                if key in candidate:
                    chunk["candidates"][0][key] = candidate[key]
            chunk["usageMetadata"] = reply["usageMetadata"]
        chunks.append(chunk)
    return chunks


class _ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []


class ModelServer:
    """The loopback model, in a thread of the parent process."""

    def __init__(self) -> None:
        self._server = _ModelServer()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._server.lock:
            return list(self._server.requests)

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def lookup(city: str) -> dict[str, str]:
    """Look up the weather in a city."""
    return {"city": city, "weather": "sunny"}


# ----------------------------------------------------------------------------- the child


@dataclass(frozen=True)
class ChildJob:
    store: str  # a SQLite path or a postgresql:// URL
    base_url: str
    conversation_id: str
    operation: str
    message: str
    kill_at: int | None  # None: count the steps and finish
    steps_file: str


def _traced_prefixes() -> tuple[str, ...]:
    import httpx

    prefixes = [os.path.dirname(chatledger.__file__), os.path.dirname(httpx.__file__)]
    try:
        import psycopg

        prefixes.append(os.path.dirname(psycopg.__file__))
    except ImportError:  # pragma: no cover - the postgres extra is part of the dev install
        pass
    return tuple(prefixes)


class _Killer:
    """Counts steps; SIGKILLs this process at step ``kill_at``."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.steps = 0
        self.prefixes = _traced_prefixes()

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def global_trace(self, frame: Any, event: str, arg: Any) -> Callable[..., Any] | None:
        if frame.f_code.co_filename.startswith(self.prefixes):
            return self.local_trace
        return None

    def local_trace(self, frame: Any, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "line":
            self.step()
        return self.local_trace

    def progress(self) -> int:
        self.step()
        return 0


def child_main(job: ChildJob) -> None:
    """Run one operation in this (forked) process, killing itself at ``job.kill_at``."""
    client = chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": job.base_url},
        store=job.store,
        actor="crash-child",
    )
    config = {"tools": [lookup]} if job.operation == "function_calling" else None
    chat = client.chats.get(job.conversation_id, config=config)
    killer = _Killer(job.kill_at)
    connection = getattr(client.store, "_conn", None)
    if connection is not None:
        connection.set_progress_handler(killer.progress, 20)
    sys.settrace(killer.global_trace)
    threading.settrace(killer.global_trace)
    try:
        run_operation(chat, job.operation, job.message)
    finally:
        sys.settrace(None)
        threading.settrace(None)
        if connection is not None:
            connection.set_progress_handler(None, 0)
    Path(job.steps_file).write_text(str(killer.steps))
    client.close()


def run_operation(chat: chatledger.Chat, operation: str, message: str) -> None:
    if operation in ("send_message", "function_calling"):
        chat.send_message(message)
    elif operation == "continuation":
        chat.send_message(f"{LONG} {message}")
    elif operation in ("send_message_stream", "continuation_stream"):
        text = f"{LONG} {message}" if operation == "continuation_stream" else message
        for _ in chat.send_message_stream(text):
            pass
    elif operation == "fork":
        fork = chat.fork(turn=1)
        fork.send_message(message)
    elif operation == "rewind":
        chat.rewind()
    else:  # pragma: no cover
        raise ValueError(operation)


# ----------------------------------------------------------------------------- the parent


@dataclass
class CrashReport:
    store_kind: str
    operation: str
    steps: int = 0
    kill_points: int = 0
    completed: int = 0  # kill points past the end of a (shorter) run
    events_lost: int = 0
    invariants_broken: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.invariants_broken += 1
        if len(self.failures) < 10:
            self.failures.append(message)


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["chatledger", "httpx", "tests.faults.crash"])
    return context


def _run_child(context: Any, job: ChildJob) -> int:
    process = context.Process(target=child_main, args=(job,))
    process.start()
    process.join(120)
    if process.is_alive():  # pragma: no cover - a hang is a failure, not a wait
        process.kill()
        process.join()
        return -999
    return int(process.exitcode or 0)


def _seed_conversation(client: chatledger.Client, label: str) -> chatledger.Chat:
    history = [
        {"role": "user", "parts": [{"text": f"{label} seed question"}]},
        {"role": "model", "parts": [{"text": f"{label} seed answer"}]},
    ]
    chat = client.chats.create(model=MODEL, history=history)
    chat.send_message(f"{label} first")
    return chat


def _stream_ids(client: chatledger.Client, conversation_id: str) -> list[str]:
    return [conversation_id] + [
        s.conversation_id for s in client.chats.list(parent_id=conversation_id)
    ]


def check_request(body: dict[str, Any]) -> list[str]:
    """What is wrong with a request a chat sent: unpaired function calls, repeated user
    messages (each test message is unique, so a repeat is a duplicate)."""
    problems = []
    contents = body.get("contents") or []
    for index, content in enumerate(contents):
        calls = [p for p in content.get("parts") or [] if "functionCall" in p]
        if content.get("role") == "model" and calls:
            following = contents[index + 1] if index + 1 < len(contents) else None
            answers = [p for p in (following or {}).get("parts") or [] if "functionResponse" in p]
            if len(answers) != len(calls):
                problems.append(
                    f"content {index}: {len(calls)} function call(s), {len(answers)} response(s)"
                )
        if content.get("role") == "user":
            for part in content.get("parts") or []:
                if "functionResponse" in part and (
                    index == 0
                    or not any("functionCall" in p for p in contents[index - 1].get("parts") or [])
                ):
                    problems.append(f"content {index}: a function response without its call")
    texts = [
        "".join(p.get("text", "") for p in c.get("parts") or [])
        for c in contents
        if c.get("role") == "user" and any("text" in p for p in c.get("parts") or [])
    ]
    repeated = {t for t in texts if texts.count(t) > 1}
    if repeated:
        problems.append(f"user message(s) sent twice: {sorted(repeated)}")
    if body.get("continuationToken"):
        problems.append("a new message was sent with a continuation token")
    return problems


def check_continued_replies(history: list[Any]) -> list[str]:
    """A continued answer is one model content holding both hops: a first hop alone in a
    history means a turn was closed half-merged."""
    problems = []
    for index, content in enumerate(history):
        text = "".join(part.text or "" for part in content.parts or [])
        if content.role == "model" and "first half" in text and "reply to" not in text:
            problems.append(f"content {index}: a continued reply without its last hop: {text!r}")
    return problems


def _check_after_kill(
    report: CrashReport,
    store: str,
    server: ModelServer,
    conversation_id: str,
    before: dict[str, list[tuple[str, str]]],
    label: str,
) -> None:
    with chatledger.Client(
        api_key=API_KEY,
        http_options={"base_url": server.base_url},
        store=store,
        actor="crash-check",
    ) as client:
        # nothing committed before the operation is lost or changed
        for stream_id, events in before.items():
            try:
                now = [(e.event_id, e.hash) for e in client.store.read(stream_id)]
            except Exception as exc:
                report.fail(f"{label}: reading {stream_id} failed: {exc!r}")
                report.events_lost += len(events)
                continue
            lost = sum(1 for i, e in enumerate(events) if i >= len(now) or now[i] != e)
            if lost:
                report.events_lost += lost
                report.fail(f"{label}: {lost} committed event(s) of {stream_id} lost or changed")
        for stream_id in _stream_ids(client, conversation_id):
            verification = client.store.verify(stream_id)
            if not verification.ok:
                report.fail(f"{label}: verify {stream_id}: {verification.problems[0]}")
                continue
            config = {"tools": [lookup]}
            chat = client.chats.get(stream_id, config=config)
            for curated in (False, True):
                live = chat.get_history(curated=curated)
                rebuilt = chat.get_history(curated=curated, as_of=chat.version)
                if live != rebuilt:
                    report.fail(f"{label}: {stream_id} curated={curated} history does not rebuild")
                for problem in check_continued_replies(live):
                    report.fail(f"{label}: {stream_id}: {problem}")
            seen = len(server.requests)
            try:
                chat.send_message(f"{label} after the crash on {stream_id[-6:]}")
            except Exception as exc:
                report.fail(f"{label}: resuming {stream_id} failed: {exc!r}")
                continue
            for body in server.requests[seen:]:
                for problem in check_request(body):
                    report.fail(f"{label}: resumed request on {stream_id}: {problem}")
            verification = client.store.verify(stream_id)
            if not verification.ok:
                report.fail(
                    f"{label}: verify after resuming {stream_id}: {verification.problems[0]}"
                )


def count_steps(
    context: Any, store: str, server: ModelServer, operation: str, workdir: Path
) -> int:
    with chatledger.Client(
        api_key=API_KEY, http_options={"base_url": server.base_url}, store=store
    ) as client:
        chat = _seed_conversation(client, f"count-{operation}")
    steps_file = workdir / f"steps-{operation}"
    job = ChildJob(
        store, server.base_url, chat.id, operation, f"count {operation}", None, str(steps_file)
    )
    code = _run_child(context, job)
    if code != 0:
        raise RuntimeError(f"counting the steps of {operation} failed (exit code {code})")
    return int(steps_file.read_text())


def crash_operation(
    store: str,
    store_kind: str,
    operation: str,
    kill_points: int,
    workdir: Path,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> CrashReport:
    """Kill ``operation`` at ``kill_points`` points spread over its steps; check after each."""
    report = CrashReport(store_kind, operation)
    context = _context()
    with ModelServer() as server:
        report.steps = count_steps(context, store, server, operation, workdir)
        rng = random.Random(f"{seed}-{store_kind}-{operation}")
        # the last 2% of steps are teardown after the last write; kill before it
        candidates = range(1, max(2, int(report.steps * 0.98)))
        points = sorted(rng.sample(candidates, min(kill_points, len(candidates))))
        for number, kill_at in enumerate(points, 1):
            label = f"{store_kind}/{operation}@{kill_at}"
            with chatledger.Client(
                api_key=API_KEY, http_options={"base_url": server.base_url}, store=store
            ) as client:
                chat = _seed_conversation(client, f"k{kill_at}-{operation}")
                before = {
                    sid: [(e.event_id, e.hash) for e in client.store.read(sid)]
                    for sid in _stream_ids(client, chat.id)
                }
            message = f"k{kill_at}-{operation} the message"
            job = ChildJob(
                store, server.base_url, chat.id, operation, message, kill_at, str(workdir / "steps")
            )
            code = _run_child(context, job)
            if code == 0:
                report.completed += 1
            elif code == -signal.SIGKILL:
                report.kill_points += 1
            else:
                report.fail(
                    f"{label}: the child exited with {code} instead of dying at its kill point"
                )
            try:
                _check_after_kill(report, store, server, chat.id, before, label)
            except Exception:
                report.fail(f"{label}: the check raised:\n{traceback.format_exc()}")
            if progress is not None and (number % 25 == 0 or number == len(points)):
                progress(
                    f"{store_kind}/{operation}: {number}/{len(points)} kill points, "
                    f"{report.invariants_broken} broken"
                )
    return report


def iter_operations() -> Iterator[str]:
    yield from OPERATIONS
