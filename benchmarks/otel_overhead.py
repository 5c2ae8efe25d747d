"""What OpenTelemetry costs a chat turn: absent, installed without an SDK, and with one.

    python benchmarks/otel_overhead.py                       # 100 turns x 9 rounds
    python benchmarks/otel_overhead.py --turns 100 --rounds 3 --json otel.json

Each round runs each setting in a process of its own (settings interleaved, so that the
load of a shared machine falls on all of them alike), from a fresh import, the same turns
after a round of warm-up:

- ``absent``: the ``opentelemetry`` package hidden from the process as if it were not
  installed (a finder in ``sys.meta_path`` answers "no such module"): chatledger's
  telemetry is the no-op and nothing of OpenTelemetry is imported;
- ``api``: the package installed, no SDK configured: spans go to the global no-op
  provider (the common case when a dependency pulls ``opentelemetry-api`` in);
- ``sdk``: the SDK's ``TracerProvider`` with a ``SimpleSpanProcessor`` and an exporter
  that drops the spans, so that the cost is chatledger's spans and the SDK's, not an
  exporter's I/O;
- ``sdk+content``: the same with message contents on the spans.

Two turns: a plain one (user message, one model call: a turn span and a chat span) and
one with a function call (two model calls and the function: four spans). The model is
a ``ScriptedTransport`` and the log ``:memory:`` (``--store file`` for a SQLite file), so
the log writes are as cheap as they get and OpenTelemetry's share is as large as it
gets. Each round gives the mean time per turn; the table shows the best round (the least
disturbed by other work on the machine, as ``timeit`` advises) and the median one, and
the ratio of the best to ``absent``'s best; "modules" is how many ``opentelemetry``
modules the process had imported. The machine is shared: read small differences as noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("absent", "api", "sdk", "sdk+content")

# Runs in the child process: prints one JSON line of seconds per turn, per round.
CHILD = r"""
import importlib.abc, json, sys, time

setting, turns, rounds, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

if setting == "absent":
    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, NotInstalled())

import chatledger
from chatledger.client.transports import ScriptedTransport

options = {}
if setting.startswith("sdk"):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    options = {"tracer_provider": provider, "capture_message_content": setting == "sdk+content"}


def add(a: int, b: int) -> int:
    "Add two numbers."
    return a + b


CALL = {"candidates": [{"content": {"role": "model", "parts": [
    {"functionCall": {"name": "add", "args": {"a": 1, "b": 2}, "id": "c"}}]},
    "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3}}
ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": "3, as asked."}]},
    "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4}}

results = {}
for kind in ("plain", "function"):
    per_turn = []
    for round_ in range(rounds + 1):  # the first round warms up and is not counted
        transport = ScriptedTransport()
        for _ in range(turns):
            if kind == "function":
                transport.enqueue(CALL)
            transport.enqueue(ANSWER)
        path = ":memory:" if store == ":memory:" else f"{store}-{kind}-{round_}.db"
        client = chatledger.Client(transport=transport, store=path, actor="bench", **options)
        config = {"tools": [add]} if kind == "function" else None
        chat = client.chats.create(model="gemini-2.5-flash", config=config)
        started = time.perf_counter()
        for _ in range(turns):
            chat.send_message("What is 1 + 2?")
        elapsed = time.perf_counter() - started
        client.close()
        if round_:
            per_turn.append(elapsed / turns)
    results[kind] = per_turn
results["loaded"] = len([m for m in sys.modules if m.split(".")[0] == "opentelemetry"])
print(json.dumps(results))
"""


def run_setting(setting: str, turns: int, rounds: int, store: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, setting, str(turns), str(rounds), store],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the {setting} run failed:\n{result.stderr}")
    loaded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="turns per round (100)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per setting (9)")
    parser.add_argument("--store", choices=("memory", "file"), default="memory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.turns < 1 or args.rounds < 1:
        parser.error("--turns and --rounds must be at least 1")
    results: dict[str, dict[str, Any]] = {
        setting: {"plain": [], "function": [], "loaded": 0} for setting in SETTINGS
    }
    with tempfile.TemporaryDirectory() as scratch:
        store = ":memory:" if args.store == "memory" else str(Path(scratch) / "log")
        for round_ in range(args.rounds):
            for setting in SETTINGS:
                one = run_setting(
                    setting, args.turns, 1, f"{store}-{round_}" if args.store == "file" else store
                )
                results[setting]["plain"] += one["plain"]
                results[setting]["function"] += one["function"]
                results[setting]["loaded"] = one["loaded"]
    print(
        f"OpenTelemetry cost per chat turn ({args.turns} turns x {args.rounds} rounds, "
        f"store {args.store}; µs per turn, best round / median round)"
    )
    print(
        f"{'setting':<13} {'plain turn':>15} {'ratio':>6} {'turn + function':>17} {'ratio':>6}"
        f" {'modules':>8}"
    )
    report: dict[str, Any] = {"turns": args.turns, "rounds": args.rounds, "store": args.store}
    kinds = ("plain", "function")
    base = {kind: min(results["absent"][kind]) for kind in kinds}
    for setting in SETTINGS:
        best = {kind: min(results[setting][kind]) for kind in kinds}
        median = {kind: statistics.median(results[setting][kind]) for kind in kinds}
        cells = [
            f"{best[kind] * 1e6:>7.0f} / {median[kind] * 1e6:<5.0f} {best[kind] / base[kind]:>6.2f}"
            for kind in kinds
        ]
        print(f"{setting:<13} {cells[0]:>22} {cells[1]:>24} {results[setting]['loaded']:>8}")
        report[setting] = {
            "plain_turn_best_s": best["plain"],
            "plain_turn_median_s": median["plain"],
            "function_turn_best_s": best["function"],
            "function_turn_median_s": median["function"],
            "plain_ratio": best["plain"] / base["plain"],
            "function_ratio": best["function"] / base["function"],
            "opentelemetry_modules": results[setting]["loaded"],
        }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
