"""Figure 7: a chat backend under load.

200 concurrent async chats, 3 streamed turns each, through a Gemini-protocol server on
loopback that answers after 50 ms (benchmarks/loadserver.py, in a process of its own):
chatledger's ``client.aio.chats`` on a SQLite file at its defaults against google-genai
3.3.0's ``AsyncChat`` alone (in memory), same server, same messages. Each run is a fresh
client process (so imports, pools and threads start alike), and the libraries alternate
over the rounds. Per run:

- **throughput**: turns / wall time, from the start of the first chat to the end of the
  last;
- **first chunk**: from calling ``send_message_stream`` to the first chunk; the added
  latency is chatledger's p99 minus google-genai's p99 in the same round;
- **loop stalls**: a ticker task sleeps 1 ms at a time; its worst lateness (actual wake-up
  minus expected) is the longest the loop could not run it. The longest single callback
  (one step of one task) is timed too, with what it was, which names the blocking call;
- **client CPU per turn**: the client process's CPU time (all threads) over the run /
  turns;
- **new TCP connections**: counted by the server (accepted connections during the run).

Each chat task creates its chat (``client.aio.chats.create``, as a request handler for a
new conversation does) and then sends its turns; a second chatledger row creates every
chat before the clock starts, which separates the cost of creating from sending.

Then the same load from 8 processes (25 chats each), chatledger's all on one SQLite file,
against google-genai in 8 processes: the figure a multi-worker server (gunicorn, uvicorn
--workers 8) meets.

``python -m benchmarks.load client ...`` is the client process; ``python -m
benchmarks.load diagnose`` runs the variants that locate the causes (a pooled
transport, google-genai over httpx, stall stacks, a profile); see docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402
from benchmarks.loadserver import LoadServer  # noqa: E402
from benchmarks.measure import Progress, failure  # noqa: E402

NAME = "load"
TITLE = "7. A chat backend under load: async chats, 3 streamed turns, server answers after 50 ms"
API_KEY = "bench-key"
DELAY_S = 0.05
TICK_S = 0.001
#: Longest callbacks kept per run.
KEEP_SLOW = 8
#: A stall-stack sample is taken when one callback has run this long.
STALL_SAMPLE_S = 0.010

GOALS = {
    "throughput": 0.95,
    "added_p99_s": 0.005,
    "stall_s": 0.010,
}

LIBRARIES = {
    "chatledger": "chatledger client.aio.chats, SQLite file (defaults)",
    "google-genai": "google-genai AsyncChat, in memory",
    # Diagnostics (python -m benchmarks.load diagnose):
    "chatledger-pooled": "chatledger with an httpx.AsyncClient without pool limits",
    "chatledger-httpx2": "chatledger with an httpx2.AsyncClient (httpcore2's pool; happy path only)",
    "google-genai-httpx": "google-genai AsyncChat over a default httpx.AsyncClient",
}


# ============================================================================ the client


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class _LoopWatch:
    """Times every callback the loop runs (asyncio's Handle._run) and keeps the longest,
    with what each was; optionally samples the loop thread's stack when one runs long."""

    def __init__(self, sample_stacks: bool) -> None:
        self.slow: list[tuple[float, str]] = []
        self.longest = 0.0
        #: The most CPU time of the loop's thread one callback used (descheduling and
        #: waiting for the GIL or a lock not counted): the work itself. Measured with
        #: --sample-stalls only (else the same as ``longest``).
        self.longest_cpu = 0.0
        self.callbacks = 0
        self.current_started = 0.0
        self.current_sampled = False
        self.stacks: dict[str, int] = {}
        self.sample_stacks = sample_stacks
        self._original = asyncio.events.Handle._run
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    def install(self) -> None:
        watch = self
        original = self._original
        clock = time.perf_counter
        # The loop thread's CPU clock is a system call: only in diagnostic runs.
        cpu_clock = time.thread_time if self.sample_stacks else time.perf_counter

        def _run(handle: asyncio.events.Handle) -> None:
            started, cpu = clock(), cpu_clock()
            watch.current_started = started
            watch.current_sampled = False
            try:
                original(handle)
            finally:
                elapsed = clock() - started
                used = cpu_clock() - cpu
                watch.current_started = 0.0
                watch.callbacks += 1
                if elapsed > watch.longest:
                    watch.longest = elapsed
                if used > watch.longest_cpu:
                    watch.longest_cpu = used
                if elapsed > 0.002:
                    watch.slow.append((elapsed, _describe(handle)))
                    if len(watch.slow) > 4 * KEEP_SLOW:
                        watch.slow.sort(reverse=True)
                        del watch.slow[KEEP_SLOW:]

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        if self.sample_stacks:
            threading.Thread(target=self._sampler, daemon=True, name="stall-sampler").start()

    def _sampler(self) -> None:
        while not self._stop.wait(0.002):
            started = self.current_started
            if not started or self.current_sampled:
                continue
            if time.perf_counter() - started < STALL_SAMPLE_S:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            self.current_sampled = True
            stack = traceback.extract_stack(frame)
            keep = [
                f"{Path(entry.filename).name}:{entry.lineno} {entry.name}"
                for entry in stack
                if "asyncio" not in entry.filename and "load.py" not in entry.filename
            ][-8:]
            key = " <- ".join(reversed(keep))
            self.stacks[key] = self.stacks.get(key, 0) + 1

    def uninstall(self) -> None:
        self._stop.set()
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]

    def top(self) -> list[dict[str, Any]]:
        self.slow.sort(reverse=True)
        return [{"s": s, "what": what} for s, what in self.slow[:KEEP_SLOW]]


def _describe(handle: asyncio.events.Handle) -> str:
    """What a callback was: for a task's step, the coroutine and the innermost await it
    stopped at (file:line function) when the step ended."""
    callback = handle._callback
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return repr(callback)[:160]
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    frame = None
    for _ in range(64):  # down the chain of awaits to the innermost frame
        inner = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        inner = inner or getattr(coro, "gi_frame", None)
        if inner is None:
            break
        frame = inner
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )
        if coro is None:
            break
    if frame is None:
        return f"task step of {name} (finished)"
    where = f"{Path(frame.f_code.co_filename).parent.name}/{Path(frame.f_code.co_filename).name}"
    return f"task step of {name}, ended at {where}:{frame.f_lineno} {frame.f_code.co_name}"


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    clock = time.perf_counter
    while not stop.is_set():
        expected = clock() + TICK_S
        await asyncio.sleep(TICK_S)
        lags.append(clock() - expected)


def _make_client(library: str, url: str, db: str) -> tuple[Any, Any]:
    """(client, async chats factory) of ``library``."""
    if library.startswith("chatledger"):
        import chatledger

        if library in ("chatledger-pooled", "chatledger-httpx2"):
            from chatledger.client.transports.gemini import GeminiTransport
            from chatledger.types import HttpOptions

            if library == "chatledger-pooled":
                import httpx

                pool: Any = httpx.AsyncClient(
                    timeout=httpx.Timeout(None, connect=30.0),
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
                )
            else:
                # A drop-in fork of httpx (pydantic/httpx2): the same API, its own
                # exception classes, so chatledger's error translation would not see
                # them; enough for a run without errors.
                import httpx2

                pool = httpx2.AsyncClient(timeout=httpx2.Timeout(None, connect=30.0))
            transport = GeminiTransport(API_KEY, HttpOptions(base_url=url), async_http_client=pool)
            client = chatledger.Client(store=db, actor="bench", transport=transport)
        else:
            client = chatledger.Client(
                api_key=API_KEY, http_options={"base_url": url}, store=db, actor="bench"
            )
        return client, client.aio.chats
    from google import genai

    options: dict[str, Any] = {"base_url": url, "api_version": "v1beta"}
    if library == "google-genai-httpx":
        import httpx

        options["httpx_async_client"] = httpx.AsyncClient()
    client = genai.Client(api_key=API_KEY, http_options=options)
    return client, client.aio.chats


class _StoreCalls:
    """Times every call of a chatledger store's public methods made on the event loop's
    thread (lock and busy waits included): store work that blocks the loop."""

    METHODS = (
        "append",
        "read",
        "read_all",
        "load_snapshot",
        "save_snapshot",
        "stream_info",
        "conversations",
        "verify",
    )

    def __init__(self, store: Any) -> None:
        self.loop_thread = threading.get_ident()
        self.active = False
        self.calls: dict[str, list[float]] = {}
        for name in self.METHODS:
            method = getattr(store, name, None)
            if method is not None:
                setattr(store, name, self._timed(name, method))

    def _timed(self, name: str, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active or threading.get_ident() != self.loop_thread:
                return method(*args, **kwargs)
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.calls.setdefault(name, []).append(time.perf_counter() - started)

        return timed

    def report(self) -> dict[str, Any]:
        every = [(s, name) for name, times in self.calls.items() for s in times]
        longest = max(every, default=(0.0, ""))
        return {
            "store_calls_on_loop": len(every),
            "store_on_loop_s": sum(s for s, _ in every),
            "store_longest_on_loop_s": longest[0],
            "store_longest_on_loop_call": longest[1],
            "store_calls_on_loop_by_method": {
                name: {"calls": len(times), "max_s": max(times), "total_s": sum(times)}
                for name, times in self.calls.items()
            },
        }


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    client, chats = _make_client(args.library, args.url, args.db)
    store_calls = _StoreCalls(client.store) if hasattr(client, "store") else None
    watch = _LoopWatch(args.sample_stalls)
    first_chunks: list[float] = []
    turn_times: list[float] = []
    create_times: list[float] = []
    errors: list[str] = []
    lags: list[float] = []

    def create() -> Any:
        started = time.perf_counter()
        chat = chats.create(model=corpus.MODEL)
        create_times.append(time.perf_counter() - started)
        return chat

    async def conversation(index: int, chat: Any) -> None:
        try:
            if chat is None:
                chat = create()
            for turn in range(args.turns):
                message = corpus.user_text(index * args.turns + turn)
                started = time.perf_counter()
                stream = await chat.send_message_stream(message)
                first = None
                text = 0
                async for chunk in stream:
                    if first is None:
                        first = time.perf_counter() - started
                    text += len(chunk.text or "")
                turn_times.append(time.perf_counter() - started)
                if first is None or not text:
                    raise RuntimeError("an empty reply")
                first_chunks.append(first)
        except Exception as exc:
            errors.append(failure(exc))

    # Warm-up, untimed: one chat, one streamed turn (lazy imports, first-use costs).
    for attempt in range(3):
        try:
            warm = chats.create(model=corpus.MODEL)
            async for _ in await warm.send_message_stream(corpus.user_text(0)):
                pass
            break
        except Exception:
            if attempt == 2:
                raise
    prepared = [create() for _ in range(args.chats)] if args.precreate else [None] * args.chats
    if args.ready_file:
        Path(args.ready_file).write_text("ready")
    if args.wait_go:
        await asyncio.to_thread(sys.stdin.readline)
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, lags))
    await asyncio.sleep(0.01)
    profiler = cProfile.Profile() if args.profile else None
    watch.install()
    if store_calls is not None:
        store_calls.active = True
    cpu = time.process_time()
    began = time.monotonic()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(conversation(index, chat) for index, chat in enumerate(prepared)))
    if profiler is not None:
        profiler.disable()
    ended = time.monotonic()
    cpu = time.process_time() - cpu
    if store_calls is not None:
        store_calls.active = False
    watch.uninstall()
    stop.set()
    await ticker
    if args.profile:
        assert profiler is not None
        profiler.dump_stats(args.profile)
    closer = getattr(getattr(client, "aio", None), "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()
    turns = len(turn_times)
    return {
        "library": args.library,
        "chats": args.chats,
        "turns_per_chat": args.turns,
        "precreate": args.precreate,
        "turns": turns,
        "errors": len(errors),
        "error": errors[0] if errors else None,
        "began": began,
        "ended": ended,
        "wall_s": ended - began,
        "cpu_s": cpu,
        "cpu_per_turn_s": cpu / turns if turns else None,
        "first_chunk_s": first_chunks,
        "turn_s": turn_times,
        "create_s": create_times,
        "lag_max_s": max(lags) if lags else None,
        "lag_p99_s": _percentile(lags, 0.99) if lags else None,
        "ticks": len(lags),
        "longest_callback_s": watch.longest,
        "longest_callback_cpu_s": watch.longest_cpu if args.sample_stalls else None,
        "callbacks": watch.callbacks,
        "slow_callbacks": watch.top(),
        "stall_stacks": dict(sorted(watch.stacks.items(), key=lambda kv: -kv[1])[:12]),
        "threads": threading.active_count(),
        **(store_calls.report() if store_calls is not None else {}),
    }


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.load client")
    parser.add_argument("--library", choices=list(LIBRARIES), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--db", default=":memory:")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--precreate", action="store_true")
    parser.add_argument("--wait-go", action="store_true", help="start on a line on stdin")
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--sample-stalls", action="store_true")
    parser.add_argument("--profile", default="", help="write a cProfile of the load here")
    args = parser.parse_args(argv)
    result = asyncio.run(_load(args))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ============================================================================ runs


def _client_command(
    library: str, url: str, db: str, chats: int, turns: int, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.load",
        "client",
        "--library",
        library,
        "--url",
        url,
        "--db",
        db,
        "--chats",
        str(chats),
        "--turns",
        str(turns),
        *extra,
    ]


def _parse(stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    raise RuntimeError(f"the client process failed: {tail[:300]}")


def run_clients(
    server: LoadServer,
    library: str,
    *,
    processes: int,
    chats: int,
    turns: int,
    db: str,
    extra: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``processes`` client processes of ``chats`` chats each, started together;
    aggregate their results with the server's connection count. ``wrapper`` goes before
    each client's command (a profiler such as ``py-spy record ... --``)."""
    with tempfile.TemporaryDirectory(prefix="chatledger-load-") as folder:
        children = []
        for index in range(processes):
            ready = str(Path(folder) / f"ready-{index}")
            command = [
                *wrapper,
                *_client_command(
                    library,
                    server.base_url,
                    db,
                    chats,
                    turns,
                    "--wait-go",
                    "--ready-file",
                    ready,
                    *extra,
                ),
            ]
            child = subprocess.Popen(
                command,
                cwd=str(ROOT),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            children.append((child, Path(ready)))
        deadline = time.monotonic() + 300
        while not all(path.exists() for _, path in children):
            if time.monotonic() > deadline or any(c.poll() is not None for c, _ in children):
                for child, _ in children:
                    child.kill()
                outputs = [child.communicate() for child, _ in children]
                raise RuntimeError(
                    "a client process did not get ready: "
                    + next((err.strip()[-300:] for _, err in outputs if err.strip()), "?")
                )
            time.sleep(0.02)
        server.reset()
        for child, _ in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        try:
            for child, _ in children:
                out, err = child.communicate(timeout=600)
                results.append(_parse(out, err))
        finally:
            for child, _ in children:  # a stuck or failed run leaves no process behind
                if child.poll() is None:
                    child.kill()
                    child.wait()
        connections = server.stats()
    return _aggregate(library, results, connections)


def _aggregate(
    library: str, results: list[dict[str, Any]], server: dict[str, int]
) -> dict[str, Any]:
    first = [v for r in results for v in r["first_chunk_s"]]
    turn_times = [v for r in results for v in r["turn_s"]]
    creates = [v for r in results for v in r["create_s"]]
    turns = sum(r["turns"] for r in results)
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    slow = sorted((item for r in results for item in r["slow_callbacks"]), key=lambda i: -i["s"])[
        :KEEP_SLOW
    ]
    stacks: dict[str, int] = {}
    for r in results:
        for key, count in r["stall_stacks"].items():
            stacks[key] = stacks.get(key, 0) + count
    return {
        "library": library,
        "processes": len(results),
        "chats": sum(r["chats"] for r in results),
        "turns": turns,
        "errors": sum(r["errors"] for r in results),
        "error": next((r["error"] for r in results if r["error"]), None),
        "wall_s": wall,
        "turns_per_s": turns / wall if wall else None,
        "cpu_per_turn_s": sum(r["cpu_s"] for r in results) / turns if turns else None,
        "first_chunk_p50_s": _percentile(first, 0.5),
        "first_chunk_p99_s": _percentile(first, 0.99),
        "turn_p50_s": _percentile(turn_times, 0.5),
        "turn_p99_s": _percentile(turn_times, 0.99),
        "create_max_s": max(creates) if creates else None,
        "create_p50_s": _percentile(creates, 0.5) if creates else None,
        "lag_max_s": max(r["lag_max_s"] or 0 for r in results),
        "lag_p99_s": max(r["lag_p99_s"] or 0 for r in results),
        "longest_callback_s": max(r["longest_callback_s"] for r in results),
        "longest_callback_cpu_s": max(
            (
                r["longest_callback_cpu_s"]
                for r in results
                if r["longest_callback_cpu_s"] is not None
            ),
            default=None,
        ),
        "slow_callbacks": slow,
        "stall_stacks": dict(sorted(stacks.items(), key=lambda kv: -kv[1])[:12]),
        "store_calls_on_loop": sum(r.get("store_calls_on_loop", 0) for r in results),
        "store_longest_on_loop_s": max(r.get("store_longest_on_loop_s", 0.0) for r in results),
        "store_longest_on_loop_call": max(
            results, key=lambda r: r.get("store_longest_on_loop_s", 0.0)
        ).get("store_longest_on_loop_call", ""),
        "store_on_loop_by_method": _merge_methods(results),
        "connections": server.get("accepted"),
        "requests": server.get("requests"),
        "max_open_connections": server.get("max_open"),
        "threads": max(r["threads"] for r in results),
    }


def _merge_methods(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    merged: dict[str, dict[str, float]] = {}
    for result in results:
        for name, item in result.get("store_calls_on_loop_by_method", {}).items():
            into = merged.setdefault(name, {"calls": 0, "max_s": 0.0, "total_s": 0.0})
            into["calls"] += item["calls"]
            into["max_s"] = max(into["max_s"], item["max_s"])
            into["total_s"] += item["total_s"]
    return merged


# ============================================================================ the figure


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of each measure; the worst stall over all rounds."""
    keys = (
        "turns_per_s",
        "cpu_per_turn_s",
        "first_chunk_p50_s",
        "first_chunk_p99_s",
        "turn_p99_s",
        "lag_max_s",
        "lag_p99_s",
        "longest_callback_s",
        "longest_callback_cpu_s",
        "connections",
        "max_open_connections",
        "create_max_s",
    )
    out: dict[str, Any] = {key: _median([r.get(key) for r in runs]) for key in keys}
    out["lag_worst_s"] = max((r["lag_max_s"] for r in runs), default=None)
    out["longest_callback_worst_s"] = max((r["longest_callback_s"] for r in runs), default=None)
    worst_store = max(runs, key=lambda r: r.get("store_longest_on_loop_s", 0.0), default={})
    out["store_longest_on_loop_worst_s"] = worst_store.get("store_longest_on_loop_s")
    out["store_longest_on_loop_call"] = worst_store.get("store_longest_on_loop_call")
    out["store_calls_on_loop"] = _median([r.get("store_calls_on_loop") for r in runs])
    out["store_on_loop_by_method"] = _merge_methods(
        [{"store_calls_on_loop_by_method": r.get("store_on_loop_by_method", {})} for r in runs]
    )
    out["turns"] = runs[0]["turns"] if runs else 0
    out["errors"] = sum(r["errors"] for r in runs)
    out["first_error"] = next((r["error"] for r in runs if r["error"]), None)
    slow = sorted((i for r in runs for i in r["slow_callbacks"]), key=lambda i: -i["s"])
    out["slow_callbacks"] = slow[:KEEP_SLOW]
    out["rounds"] = len(runs)
    out["runs"] = [{k: v for k, v in r.items() if k not in ("slow_callbacks",)} for r in runs]
    return out


def run(sizes: dict[str, Any], workdir: Path, progress: Progress) -> dict[str, Any]:
    chats, turns, rounds = sizes["load_chats"], sizes["load_turns"], sizes["load_rounds"]
    processes = sizes["load_processes"]
    configs = [
        # (row key, library, processes, chats per process, extra args, label)
        ("chatledger", "chatledger", 1, chats, (), "create + 3 streamed turns per chat"),
        ("google-genai", "google-genai", 1, chats, (), "create + 3 streamed turns per chat"),
        (
            "chatledger-precreated",
            "chatledger",
            1,
            chats,
            ("--precreate",),
            "chats created before the clock starts",
        ),
        (
            f"chatledger-{processes}p",
            "chatledger",
            processes,
            chats // processes,
            (),
            f"{processes} processes, one SQLite file",
        ),
        (
            f"google-genai-{processes}p",
            "google-genai",
            processes,
            chats // processes,
            (),
            f"{processes} processes",
        ),
    ]
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in configs}
    failures: dict[str, list[str]] = {key: [] for key, *_ in configs}
    with LoadServer(DELAY_S) as server:
        for round_number in range(rounds):
            shift = round_number % len(configs)
            for key, library, count, per_process, extra, _ in configs[shift:] + configs[:shift]:
                db = str(workdir / f"load-{key}-{round_number}.db")
                progress(
                    f"round {round_number + 1}/{rounds}: {key} ({count} x {per_process} chats x {turns} turns)"
                )
                try:
                    result = run_clients(
                        server,
                        library,
                        processes=count,
                        chats=per_process,
                        turns=turns,
                        db=db,
                        extra=extra,
                    )
                    runs[key].append(result)
                    progress(
                        f"  {result['turns_per_s']:.0f} turns/s, p99 first chunk "
                        f"{result['first_chunk_p99_s'] * 1e3:.1f} ms, worst loop lag "
                        f"{result['lag_max_s'] * 1e3:.1f} ms, CPU/turn "
                        f"{result['cpu_per_turn_s'] * 1e3:.2f} ms, {result['connections']} "
                        f"connections, {result['errors']} errors"
                    )
                except Exception as exc:  # this round is lost, not the others
                    failures[key].append(failure(exc))
                    progress(f"  {key} failed: {failures[key][-1]}")
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)

    rows: list[dict[str, Any]] = []
    for key, library, count, per_process, _, label in configs:
        row: dict[str, Any] = {
            "library": library,
            "key": key,
            "variant": f"{LIBRARIES[library]}: {label}",
            "processes": count,
            "chats": count * per_process,
            "turns_per_chat": turns,
        }
        with contextlib.suppress(Exception):
            from importlib import metadata

            row["version"] = metadata.version(library)
        if failures[key]:
            row["failed_rounds"] = len(failures[key])
            row["round_errors"] = failures[key]
            if not runs[key]:
                row["error"] = failures[key][0]
        if runs[key]:
            row.update(_summarise(runs[key]))
        rows.append(row)
    return {
        "name": NAME,
        "title": TITLE,
        "unit": "turns/s",
        "rows": rows,
        "goals": _goals(rows, processes),
        "server": {"delay_s": DELAY_S, "kind": "asyncio + h11, its own process"},
        "notes": [
            f"{chats} chats x {turns} streamed turns; the server answers {DELAY_S * 1e3:.0f} ms after "
            f"each request; {rounds} rounds, the libraries alternating; medians over rounds, "
            "the worst loop lag over all",
            "each client is a fresh process; CPU is the client process's (every thread); "
            "connections are those the server accepted during the run",
            "google-genai 3.3.0 uses aiohttp for its async client when aiohttp is installed "
            "(it is in this venv, as in most), with no connection limit",
        ],
    }


def _goals(rows: list[dict[str, Any]], processes: int) -> list[dict[str, Any]]:
    by_key = {row["key"]: row for row in rows}
    ours, theirs = by_key.get("chatledger", {}), by_key.get("google-genai", {})
    goals: list[dict[str, Any]] = []
    measured = ours.get("turns_per_s") and theirs.get("turns_per_s")

    def goal(text: str, target: float, **extra: Any) -> dict[str, Any]:
        return {"goal": "7", "text": text, "target": target, **extra}

    throughput = goal("throughput >= 0.95x google-genai's AsyncChat alone", GOALS["throughput"])
    added = goal("p99 added first-chunk latency <= 5 ms", 5.0, ratio_unit="ms")
    store = goal(
        "the event loop never blocked by store work for more than 10 ms", 10.0, ratio_unit="ms"
    )
    stall = goal("worst event-loop lag (any cause, 1 ms ticker) <= 10 ms", 10.0, ratio_unit="ms")
    if not measured:
        reason = ours.get("error") or theirs.get("error") or "not measured"
        for item in (throughput, added, store, stall):
            item.update(met=None, detail=f"not measured: {reason}")
        return [throughput, added, store, stall]
    ratio = ours["turns_per_s"] / theirs["turns_per_s"]
    throughput.update(
        ratio=ratio,
        met=ratio >= GOALS["throughput"] and not ours["errors"],
        detail=(
            f"{ours['turns_per_s']:.0f} vs {theirs['turns_per_s']:.0f} turns/s = {ratio:.2f}x; "
            f"client CPU/turn {ours['cpu_per_turn_s'] * 1e3:.2f} vs "
            f"{theirs['cpu_per_turn_s'] * 1e3:.2f} ms; new connections {ours['connections']:.0f} "
            f"vs {theirs['connections']:.0f} per {ours['turns']} turns"
            + (f"; {ours['errors']} errors: {ours['first_error']}" if ours["errors"] else "")
            + (
                f"; google-genai {theirs['errors']} errors: {theirs['first_error']}"
                if theirs["errors"]
                else ""
            )
        ),
    )
    extra_ms = (ours["first_chunk_p99_s"] - theirs["first_chunk_p99_s"]) * 1e3
    added.update(
        ratio=extra_ms,
        met=extra_ms <= GOALS["added_p99_s"] * 1e3,
        detail=(
            f"p99 first chunk {ours['first_chunk_p99_s'] * 1e3:.1f} ms vs "
            f"{theirs['first_chunk_p99_s'] * 1e3:.1f} ms = {extra_ms:+.1f} ms "
            f"(p50 {ours['first_chunk_p50_s'] * 1e3:.1f} vs {theirs['first_chunk_p50_s'] * 1e3:.1f} ms)"
        ),
    )
    worst_store = (ours.get("store_longest_on_loop_worst_s") or 0.0) * 1e3
    methods = ours.get("store_on_loop_by_method") or {}
    store.update(
        ratio=worst_store,
        met=worst_store <= GOALS["stall_s"] * 1e3,
        detail=(
            f"longest store call on the loop's thread {worst_store:.0f} ms "
            f"({ours.get('store_longest_on_loop_call') or '-'}); per run "
            f"{ours.get('store_calls_on_loop') or 0:.0f} store calls on the loop: "
            + (
                ", ".join(
                    f"{name} x{item['calls'] / max(1, ours['rounds']):.0f} (max {item['max_s'] * 1e3:.0f} ms)"
                    for name, item in sorted(methods.items())
                )
                or "none"
            )
        ),
    )
    worst = ours["lag_worst_s"] * 1e3
    longest = ours["slow_callbacks"][0] if ours.get("slow_callbacks") else None
    precreated = by_key.get("chatledger-precreated", {})
    stall.update(
        ratio=worst,
        met=worst <= GOALS["stall_s"] * 1e3,
        detail=(
            f"worst loop lag {worst:.0f} ms (google-genai {theirs['lag_worst_s'] * 1e3:.0f} ms"
            + (
                f"; chats created beforehand {precreated['lag_worst_s'] * 1e3:.0f} ms"
                if precreated.get("lag_worst_s") is not None
                else ""
            )
            + ")"
            + (
                f"; longest callback {longest['s'] * 1e3:.0f} ms: {longest['what']}"
                if longest
                else ""
            )
        ),
    )
    goals += [throughput, added, store, stall]
    many_ours, many_theirs = (
        by_key.get(f"chatledger-{processes}p", {}),
        by_key.get(f"google-genai-{processes}p", {}),
    )
    many = goal(
        f"{processes} processes on one SQLite file: throughput >= 0.95x google-genai's",
        GOALS["throughput"],
    )
    if many_ours.get("turns_per_s") and many_theirs.get("turns_per_s"):
        ratio = many_ours["turns_per_s"] / many_theirs["turns_per_s"]
        many.update(
            ratio=ratio,
            met=ratio >= GOALS["throughput"] and not many_ours["errors"],
            detail=(
                f"{many_ours['turns_per_s']:.0f} vs {many_theirs['turns_per_s']:.0f} turns/s = "
                f"{ratio:.2f}x; worst loop lag {many_ours['lag_worst_s'] * 1e3:.0f} vs "
                f"{many_theirs['lag_worst_s'] * 1e3:.0f} ms; p99 first chunk "
                f"{many_ours['first_chunk_p99_s'] * 1e3:.0f} vs "
                f"{many_theirs['first_chunk_p99_s'] * 1e3:.0f} ms; connections "
                f"{many_ours['connections']:.0f} vs {many_theirs['connections']:.0f}"
                + (
                    f"; {many_ours['errors']} errors: {many_ours['first_error']}"
                    if many_ours["errors"]
                    else ""
                )
                + (
                    f"; google-genai {many_theirs['errors']} errors: {many_theirs['first_error']}"
                    if many_theirs["errors"]
                    else ""
                )
            ),
        )
    else:
        many.update(
            met=None,
            detail="not measured: "
            + (many_ours.get("error") or many_theirs.get("error") or "no result"),
        )
    goals.append(many)
    return goals


# ============================================================================ diagnostics


def diagnose_main(argv: list[str]) -> int:
    """The variants that locate the causes, each once, printed as a table."""
    parser = argparse.ArgumentParser(prog="benchmarks.load diagnose")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--only",
        default="",
        help="run only these variants: their labels, as printed, separated by '|'",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chatledger-load-diagnose-"))
    spy = str(Path(sys.executable).with_name("py-spy"))
    spied: list[tuple[str, Path]] = []
    plain: list[tuple[str, str, tuple[str, ...]]] = [
        ("chatledger", "chatledger", ()),
        ("chatledger, stall stacks", "chatledger", ("--sample-stalls",)),
        ("chatledger, precreated", "chatledger", ("--precreate",)),
        ("chatledger, unlimited pool", "chatledger-pooled", ()),
        ("chatledger over httpx2", "chatledger-httpx2", ()),
        ("google-genai (aiohttp)", "google-genai", ()),
        ("google-genai over httpx", "google-genai-httpx", ()),
        (
            "chatledger, profiled",
            "chatledger",
            ("--profile", str(args.out / "load-chatledger.prof")),
        ),
        (
            "google-genai, profiled",
            "google-genai",
            ("--profile", str(args.out / "load-google-genai.prof")),
        ),
    ]
    variants: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
        (label, library, extra, ()) for label, library, extra in plain
    ]
    if Path(spy).exists():
        for library in ("chatledger", "google-genai"):
            out = args.out / f"load-{library}.pyspy.txt"
            spied.append((f"{library}, py-spy", out))
            wrapper = (spy, "record", "--format", "raw", "--threads", "--rate", "200")
            variants.append(
                (f"{library}, py-spy", library, (), (*wrapper, "--output", str(out), "--"))
            )
    chosen = {label.strip() for label in args.only.split("|") if label.strip()}
    if chosen:
        variants = [variant for variant in variants if variant[0] in chosen]
    results = []
    with LoadServer(DELAY_S) as server:
        for round_number in range(args.rounds):
            for label, library, extra, wrapper in variants:
                db = str(workdir / f"{library}-{round_number}-{len(results)}.db")
                print(f"[{round_number + 1}] {label} ...", file=sys.stderr, flush=True)
                result = run_clients(
                    server,
                    library,
                    processes=1,
                    chats=args.chats,
                    turns=args.turns,
                    db=db,
                    extra=extra,
                    wrapper=wrapper,
                )
                result["label"] = label
                results.append(result)
    (args.out / "load-diagnose.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{'variant':32} {'turns/s':>8} {'CPU/turn':>9} {'p99 1st':>8} {'lag max':>8} "
        f"{'longest cb':>10} {'(its CPU)':>9} {'conns':>6} {'max open':>8} {'errors':>6}"
    )
    for r in results:
        cpu = r["longest_callback_cpu_s"]  # read only with --sample-stalls
        own = f"{cpu * 1e3:7.1f}ms" if cpu is not None else f"{'-':>9}"
        print(
            f"{r['label']:32} {r['turns_per_s']:8.0f} {r['cpu_per_turn_s'] * 1e3:7.2f}ms "
            f"{r['first_chunk_p99_s'] * 1e3:6.1f}ms {r['lag_max_s'] * 1e3:6.1f}ms "
            f"{r['longest_callback_s'] * 1e3:8.1f}ms {own} "
            f"{r['connections']:6} {r['max_open_connections']:8} "
            f"{r['errors']:6}"
        )
    for r in results:
        if r["stall_stacks"]:
            print(
                f"\nStacks of the loop thread, sampled when one callback ran > 10 ms ({r['label']}):"
            )
            for stack, count in r["stall_stacks"].items():
                print(f"  {count:4}  {stack}")
    for label, out in spied:
        if out.exists():
            print(f"\nWhere each thread's py-spy samples fall ({label}, the whole process):")
            for line in _spy_summary(out):
                print(f"  {line}")
    for r in results:
        print(f"\nLongest callbacks ({r['label']}):")
        for item in r["slow_callbacks"][:5]:
            print(f"  {item['s'] * 1e3:7.1f} ms  {item['what']}")
    return 0


#: Where a py-spy sample is counted: the innermost frame in one of these.
_SPY_BUCKETS = (
    ("chatledger store (SQLite, encode, hash, decode)", ("chatledger/events/",)),
    ("chatledger projections", ("chatledger/projections/",)),
    ("chatledger transport", ("chatledger/client/transports/",)),
    ("chatledger client (turns, convert, stream)", ("chatledger/client/", "chatledger/types")),
    ("httpcore/httpx/anyio/h11", ("httpcore", "httpx", "anyio", "h11", "sniffio")),
    ("aiohttp", ("aiohttp", "yarl", "multidict")),
    ("google-genai", ("google/genai",)),
    ("pydantic", ("pydantic",)),
    ("msgspec", ("msgspec",)),
    ("asyncio", ("asyncio/",)),
    ("threads, queues, locks", ("concurrent/futures", "threading.py", "queue.py")),
    ("benchmark harness", ("benchmarks/",)),
)


def _spy_summary(path: Path) -> list[str]:
    """py-spy's raw (collapsed) stacks as, per thread, the share of its samples whose
    innermost recognised frame falls in each bucket. The loop thread's samples count only
    during the timed load (inside the callback timer); py-spy attributes a sample taken
    in a system call to the line making it, so syscall-heavy lines weigh more."""
    per_thread: dict[str, dict[str, int]] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        frames = stack.split(";")
        thread = "loop thread" if "MainThread" in frames[0] else "worker threads"
        if thread == "loop thread" and not any("_LoopWatch" in frame for frame in frames):
            continue  # the loop thread outside the timed load (imports, set-up)
        bucket = "other"
        for frame in reversed(frames):
            found = next(
                (name for name, keys in _SPY_BUCKETS if any(k in frame for k in keys)), None
            )
            if found:
                bucket = found
                break
        counts = per_thread.setdefault(thread, {})
        counts[bucket] = counts.get(bucket, 0) + int(count)
    lines = []
    for thread, counts in sorted(per_thread.items()):
        total = sum(counts.values())
        shares = ", ".join(
            f"{name} {count / total:.0%}"
            for name, count in sorted(counts.items(), key=lambda kv: -kv[1])
            if count / total >= 0.01
        )
        lines.append(f"{thread} ({total} samples): {shares}")
    return lines


if __name__ == "__main__":
    commands = {"client": client_main, "diagnose": diagnose_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python -m benchmarks.load {client,diagnose} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
