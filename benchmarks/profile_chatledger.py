"""Profile chatledger's side of one benchmark figure with pyinstrument.

    .venv-bench/bin/python benchmarks/profile_chatledger.py appends
    .venv-bench/bin/python benchmarks/profile_chatledger.py appends-full     # synchronous=FULL
    .venv-bench/bin/python benchmarks/profile_chatledger.py reads            # fresh open + read
    .venv-bench/bin/python benchmarks/profile_chatledger.py reads-open       # on an open client
    .venv-bench/bin/python benchmarks/profile_chatledger.py resume --events 1000
    .venv-bench/bin/python benchmarks/profile_chatledger.py list --conversations 100000

Prints pyinstrument's call tree (and writes it to benchmarks/results/profile-NAME.txt), so a
missed goal comes with where the time goes. The operations are the ones the figures time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import corpus  # noqa: E402
from benchmarks.measure import Progress  # noqa: E402
from benchmarks.peers import ChatledgerStore  # noqa: E402


def appends(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    ledger = ChatledgerStore(workdir / "appends.db")
    ledger.new_conversation()
    ledger.append_timed(range(200))
    counter = iter(range(10**9))
    return lambda: ledger.append_message(next(counter))


def appends_full(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    ledger = ChatledgerStore(workdir / "appends.db", synchronous="FULL")
    ledger.new_conversation()
    ledger.append_timed(range(20))
    counter = iter(range(10**9))
    return lambda: ledger.append_message(next(counter))


def reads_open(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    import chatledger

    ledger = ChatledgerStore(workdir / "reads.db")
    for turn in range(args.turns):
        ledger.write_turn(turn)
    client = chatledger.Client(store=str(ledger.path))
    conversation_id = ledger.conversation_id
    return lambda: (client.chats.get(conversation_id).get_history(), None)[1]


def listing(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    import chatledger
    from benchmarks.listing import LIMIT, _build

    path = workdir / "listing.db"
    _build(path, args.conversations, Progress())
    client = chatledger.Client(store=str(path))
    return lambda: (client.chats.list(limit=LIMIT), None)[1]


def reads(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    ledger = ChatledgerStore(workdir / "reads.db")
    for turn in range(args.turns):
        ledger.write_turn(turn)
    return lambda: (ledger.read_fresh(), None)[1]


def resume(workdir: Path, args: argparse.Namespace) -> Callable[[], None]:
    from benchmarks.resume import _build_chatledger, _open_chat

    path = workdir / "resume.db"
    built = _build_chatledger(path, args.events, Progress())
    print(
        f"snapshot: {built['snapshot_bytes']:,} bytes at version {built['snapshot_version']}",
        file=sys.stderr,
    )
    return lambda: _open_chat(path, built["conversation_id"])


def _sends(workdir: Path, stream: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    from benchmarks.loopback import LoopbackServer
    from benchmarks.sends import _ledger_client

    server = LoopbackServer().__enter__()
    client = _ledger_client(server.base_url, workdir / "send.db")
    state = {"chat": client.chats.create(model=corpus.MODEL), "turn": 0}

    def send() -> None:
        if state["turn"] == 20:
            state["chat"], state["turn"] = client.chats.create(model=corpus.MODEL), 0
        message = corpus.user_text(state["turn"])
        if stream:
            chunks = state["chat"].send_message_stream(message)
            next(chunks)
            for _ in chunks:
                pass
        else:
            state["chat"].send_message(message)
        state["turn"] += 1

    def stop() -> None:
        client.close()
        server.__exit__()

    return send, stop


PROFILES: dict[str, Callable[[Path, argparse.Namespace], Callable[[], None]]] = {
    "appends": appends,
    "appends-full": appends_full,
    "reads": reads,
    "reads-open": reads_open,
    "resume": resume,
    "list": listing,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", choices=[*PROFILES, "send", "stream"])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="how long to profile (default 5)"
    )
    parser.add_argument(
        "--events", type=int, default=100_000, help="resume: log length (default 100000)"
    )
    parser.add_argument(
        "--turns", type=int, default=500, help="reads: conversation turns (default 500)"
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=100_000,
        help="list: conversations in the log (default 100000)",
    )
    args = parser.parse_args()
    from pyinstrument import Profiler

    workdir = Path(tempfile.mkdtemp(prefix="chatledger-profile-"))
    stop: Callable[[], None] = lambda: None  # noqa: E731
    if args.figure in ("send", "stream"):
        operation, stop = _sends(workdir, stream=args.figure == "stream")
    else:
        operation = PROFILES[args.figure](workdir, args)
    for _ in range(5):
        operation()  # warm-up
    profiler = Profiler(interval=0.0005)
    calls = 0
    profiler.start()
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        operation()
        calls += 1
    profiler.stop()
    stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    header = f"# chatledger, figure '{args.figure}': {calls} calls in {args.seconds:g} s\n"
    out = HERE / "results" / f"profile-{args.figure}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text)
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
