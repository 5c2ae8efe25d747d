"""The main job: a real conversation with the embedded offline model, recorded in the log.

Runs SmolLM2-135M-Instruct in process (no API key, no network), has a few turns (one
streamed), then prints the conversation's event log and its curated history with the
chatledger CLI, and says how to resume it.

    python examples/offline_demo.py [--db PATH]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import chatledger


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="chatledger-demo.db", help="SQLite file for the log")
    args = parser.parse_args()
    db = Path(args.db).resolve()

    client = chatledger.Client(store=str(db), actor="demo")
    chat = client.chats.create(
        model="local",
        config={
            "system_instruction": "You are a concise, friendly assistant.",
            "max_output_tokens": 64,
        },
    )
    print(f"conversation {chat.id} in {db}\n")

    def say(message: str) -> None:
        print(f"> {message}")
        started = time.perf_counter()
        response = chat.send_message(message)
        print(f"{response.text.strip() if response.text else ''}")
        print(f"  ({(time.perf_counter() - started):.1f} s)\n")

    print("Loading SmolLM2-135M-Instruct (once per process)...\n")
    say("Hi! What is the capital of France?")

    message = "Name three things to see there."
    print(f"> {message}  [streamed]")
    for chunk in chat.send_message_stream(message):
        print(chunk.text or "", end="", flush=True)
    print("\n")

    say("Thanks! Summarise our chat in one sentence.")
    client.close()

    cli = shutil.which("chatledger") or str(Path(sys.executable).with_name("chatledger"))
    for title, command in (
        ("The event log", ["log", chat.id]),
        ("The curated history", ["show", chat.id, "--curated"]),
    ):
        print(f"=== {title}: chatledger --db {db.name} {' '.join(command)}")
        subprocess.run([cli, "--db", str(db), *command], check=True)
        print()

    print("Resume it:   chatledger --db", db.name, "chat --id", chat.id[:8])
    print("Verify it:   chatledger --db", db.name, "verify")
    return 0


if __name__ == "__main__":
    sys.exit(main())
