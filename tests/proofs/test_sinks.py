"""Sinks against real files, a real HTTP server on loopback and real commands; the Checkpointer."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatledger.errors import InvalidInputError
from chatledger.proofs.checkpoint import (
    read_checkpoint_file,
    verify_checkpoint_consistency,
)
from chatledger.proofs.merkle import MemoryTree, TreeHead, consistency_proof, leaf_hash
from chatledger.proofs.note import Signer
from chatledger.proofs.sinks import (
    Checkpointer,
    CommandSink,
    FileSink,
    HttpSink,
    SinkError,
    StreamSink,
    sink_from_spec,
)

ORIGIN = "chatledger.example/sinks"
PASSWORD = "hunter2-DO-NOT-LEAK-77"
TOKEN = "tok-DO-NOT-LEAK-5150"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


def a_note(signer: Signer, size: int = 3) -> str:
    from chatledger.proofs.checkpoint import make_checkpoint

    tree = MemoryTree.of(bytes([i]) * 32 for i in range(size))
    return make_checkpoint(tree.head(), signer)[1]


# -- a loopback server whose behaviour each test chooses ----------------------------------------


class Server:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.body = b"ok"
        self.delay = 0.0
        self.location: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                outer.received.append((self.path, dict(self.headers), data))
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                if outer.location:
                    self.send_header("Location", outer.location)
                body = outer.body.replace(b"{auth}", self.headers.get("Authorization", "").encode())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


def test_http_sink_posts_the_note(server: Server, signer: Signer) -> None:
    note = a_note(signer)
    sink = HttpSink(f"http://127.0.0.1:{server.port}/witness/add", headers={"X-Log": "a"})
    sink.write(note)
    path, headers, body = server.received[0]
    assert path == "/witness/add"
    assert body.decode() == note
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["X-Log"] == "a"
    assert sink.description == f"http://127.0.0.1:{server.port}/witness/add"


def test_http_sink_failures_never_show_credentials(
    server: Server, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.status = 403
    server.body = b"denied for {auth} " + b"x" * 10_000
    basic = base64.b64encode(f"auditor:{PASSWORD}".encode()).decode()
    port = server.port
    for sink in [
        HttpSink(f"http://auditor:{PASSWORD}@127.0.0.1:{port}/in?token={TOKEN}"),
        HttpSink(f"http://127.0.0.1:{port}/in", headers={"Authorization": f"Bearer {TOKEN}"}),
    ]:
        with pytest.raises(SinkError, match="answered HTTP 403") as caught:
            sink.write(a_note(signer))
        message = str(caught.value) + repr(caught.value) + sink.description + caplog.text
        for secret in (PASSWORD, TOKEN, basic):
            assert secret not in message
        assert "***" in str(caught.value)  # the echoed header masked, not dropped
        assert len(str(caught.value)) < 600
    assert server.received[0][1]["Authorization"] == f"Basic {basic}"  # userinfo was sent
    assert server.received[1][1]["Authorization"] == f"Bearer {TOKEN}"
    with pytest.raises(InvalidInputError, match="once"):
        HttpSink(f"http://a:b@127.0.0.1:{port}/", headers={"authorization": "Bearer x"})


def test_http_sink_does_not_follow_redirects(server: Server, signer: Signer) -> None:
    server.status = 302
    server.location = "http://127.0.0.1:9/elsewhere"
    with pytest.raises(SinkError, match="HTTP 302"):
        HttpSink(f"http://127.0.0.1:{server.port}/").write(a_note(signer))
    assert len(server.received) == 1


def test_http_sink_times_out_and_bounds_the_answer(server: Server, signer: Signer) -> None:
    server.delay = 2.0
    with pytest.raises(SinkError, match=r"did not answer within 0\.3 s"):
        HttpSink(f"http://127.0.0.1:{server.port}/", timeout=0.3).write(a_note(signer))
    server.delay = 0.0
    server.status = 500
    server.body = b"y" * 5_000_000
    with pytest.raises(SinkError, match="HTTP 500") as caught:
        HttpSink(f"http://127.0.0.1:{server.port}/", max_response_bytes=1024).write(a_note(signer))
    assert len(str(caught.value)) < 600


def test_http_sink_refused_connection_and_bad_urls(signer: Signer) -> None:
    with pytest.raises(SinkError, match="could not POST"):
        HttpSink("http://127.0.0.1:9/", timeout=2).write(a_note(signer))
    for bad in ["ftp://example.com/x", "https://", "example.com/checkpoints"]:
        with pytest.raises(InvalidInputError):
            HttpSink(bad)


def test_file_sink_appends_notes_that_read_back(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "checkpoints.log"
    sink = FileSink(path)
    notes = [a_note(signer, size) for size in (1, 2, 3)]
    for note in notes:
        sink.write(note)
    assert path.read_text() == "\n".join(notes)
    assert [c.size for c in read_checkpoint_file(path, [signer.verifier])] == [1, 2, 3]


def test_file_sink_writers_never_interleave(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "shared.log"
    notes = [a_note(signer, size) for size in range(1, 9)]

    def writer(offset: int) -> None:
        sink = FileSink(path)
        for i in range(25):
            sink.write(notes[(i + offset) % len(notes)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_checkpoint_file(path, [signer.verifier])) == 100


def test_file_sink_failure_is_a_sink_error(tmp_path: Path, signer: Signer) -> None:
    with pytest.raises(SinkError, match="cannot open"):
        FileSink(tmp_path / "missing-dir" / "x.log").write(a_note(signer))


def test_stream_sink(signer: Signer) -> None:
    buffer = io.StringIO()
    note = a_note(signer)
    StreamSink(buffer).write(note)
    assert buffer.getvalue() == note
    buffer.close()
    with pytest.raises(SinkError):
        StreamSink(buffer).write(note)


def test_command_sink_gets_the_note_on_stdin(tmp_path: Path, signer: Signer) -> None:
    target = tmp_path / "from-command.note"
    script = f"import sys; open({str(target)!r}, 'w').write(sys.stdin.read())"
    note = a_note(signer)
    CommandSink([sys.executable, "-c", script]).write(note)
    assert target.read_text() == note


def test_command_sink_failures(signer: Signer) -> None:
    failing = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('x' * 100000 + ' upload refused'); sys.exit(3)",
    ]
    with pytest.raises(SinkError, match="exited with status 3") as caught:
        CommandSink(failing).write(a_note(signer))
    assert str(caught.value).endswith("xx upload refused")  # the end of the error output
    assert len(str(caught.value)) < 600
    with pytest.raises(SinkError, match="did not finish"):
        CommandSink([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5).write(
            a_note(signer)
        )
    with pytest.raises(SinkError, match="cannot run"):
        CommandSink(["/nonexistent/checkpoint-uploader"]).write(a_note(signer))
    with pytest.raises(InvalidInputError):
        CommandSink([])


def test_sink_specs(tmp_path: Path) -> None:
    assert isinstance(sink_from_spec("-"), StreamSink)
    assert isinstance(sink_from_spec("https://audit.example/in"), HttpSink)
    assert isinstance(sink_from_spec("exec:aws s3 cp - s3://bucket/head"), CommandSink)
    file_sink = sink_from_spec(f"file:{tmp_path}/a.log")
    assert isinstance(file_sink, FileSink) and file_sink.path == tmp_path / "a.log"
    assert isinstance(sink_from_spec(str(tmp_path / "b.log")), FileSink)
    with pytest.raises(InvalidInputError):
        sink_from_spec("")


# -- the Checkpointer ------------------------------------------------------------------------


class GrowingLog:
    """A tree that grows while the checkpointer reads it, as a store would."""

    def __init__(self) -> None:
        self.tree = MemoryTree(min_stored_level=2)
        self.lock = threading.Lock()
        self.leaves: list[bytes] = []

    def append(self, count: int) -> None:
        with self.lock:
            new = [leaf_hash(bytes([len(self.leaves) % 256]) * 32) for _ in range(count)]
            self.tree.append_hashes(new)
            self.leaves.extend(new)

    def head(self) -> TreeHead:
        with self.lock:
            return self.tree.head()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_checkpointer_signs_every_n_events_and_once_more_on_stop(
    tmp_path: Path, signer: Signer
) -> None:
    log = GrowingLog()
    path = tmp_path / "periodic.log"
    checkpointer = Checkpointer(
        log.head, signer, [FileSink(path)], every_events=10, poll_seconds=0.02
    ).start()
    for _ in range(25):
        log.append(1)
        checkpointer.notify()
        if log.tree.size in (10, 20):
            wait_for(lambda: checkpointer.written == log.tree.size // 10, "a checkpoint")
    checkpointer.stop()
    assert not checkpointer.running
    read = read_checkpoint_file(path, [signer.verifier], origin=ORIGIN)
    assert [c.size for c in read] == [10, 20, 25]
    # Every checkpoint extends the one before it.
    for old, new in itertools.pairwise(read):
        proof = consistency_proof(log.tree, old.size, new.size)
        verify_checkpoint_consistency(old.checkpoint, new.checkpoint, proof)


def test_checkpointer_every_t_seconds_only_when_the_tree_moved(
    tmp_path: Path, signer: Signer
) -> None:
    log = GrowingLog()
    fake = [0.0]
    path = tmp_path / "timed.log"
    checkpointer = Checkpointer(
        log.head,
        signer,
        [FileSink(path)],
        every_seconds=60,
        poll_seconds=0.01,
        clock=lambda: fake[0],
    )
    with checkpointer:
        log.append(3)
        fake[0] = 61
        wait_for(lambda: checkpointer.written == 1, "the first timed checkpoint")
        fake[0] = 200  # time passes, nothing appended: nothing new is signed
        time.sleep(0.1)
        assert checkpointer.written == 1
        log.append(2)
        wait_for(lambda: checkpointer.written == 2, "the second timed checkpoint")
    assert [c.size for c in read_checkpoint_file(path, [signer.verifier])] == [3, 5]


class Broken:
    description = "broken sink"

    def write(self, note: str) -> None:
        raise SinkError(f"broken sink refused it ({TOKEN})")


def test_a_failing_sink_does_not_stop_the_others(
    tmp_path: Path, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    log = GrowingLog()
    path = tmp_path / "good.log"
    checkpointer = Checkpointer(
        log.head, signer, [Broken(), FileSink(path)], every_events=1, poll_seconds=0.01
    )
    log.append(4)
    with pytest.raises(SinkError, match="1 of 2 destinations") as caught:
        checkpointer.checkpoint_now()
    assert TOKEN not in str(caught.value)
    with checkpointer:
        log.append(1)
        wait_for(lambda: checkpointer.written == 2, "the second checkpoint")
        assert checkpointer.last_error is not None
    assert [c.size for c in read_checkpoint_file(path, [signer.verifier])] == [4, 5]
    assert TOKEN not in caplog.text


def test_checkpointer_survives_a_failing_head(tmp_path: Path, signer: Signer) -> None:
    calls = [0]
    log = GrowingLog()
    log.append(2)

    def flaky() -> TreeHead:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("database is locked")
        return log.head()

    checkpointer = Checkpointer(
        flaky, signer, [FileSink(tmp_path / "f.log")], every_events=1, poll_seconds=0.01
    )
    with checkpointer:
        wait_for(lambda: checkpointer.written == 1, "a checkpoint after the failure")
    assert calls[0] >= 2


def test_checkpointer_arguments() -> None:
    signer = Signer.generate(ORIGIN)
    head = MemoryTree().head
    for kwargs in [
        {},
        {"every_events": 0},
        {"every_events": True},
        {"every_seconds": 0},
        {"every_events": 5, "poll_seconds": 0},
    ]:
        with pytest.raises(InvalidInputError):
            Checkpointer(head, signer, [StreamSink(io.StringIO())], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Checkpointer(head, signer, [], every_events=1)


def test_the_time_line_comes_from_the_clock(signer: Signer) -> None:
    import datetime as dt

    buffer = io.StringIO()
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    log = GrowingLog()
    log.append(1)
    Checkpointer(
        log.head, signer, [StreamSink(buffer)], every_events=1, now=lambda: moment
    ).checkpoint_now()
    assert "\ntime 2030-01-02T03:04:05.000000Z\n" in buffer.getvalue()
    assert base64.b64encode(log.tree.root()).decode() in buffer.getvalue()
