"""Read a chatledger log with plain SQL and with Datasette.

    pip install 'chatledger[datasette]'
    python examples/datasette_views.py [--db PATH]

Records a short chat (a scripted model, offline) and an openai-agents-style session in
a SQLite log, reads them back through the views every log has (chat_conversations,
chat_messages) with the standard library's sqlite3, writes Datasette metadata that
describes the views, and asks Datasette itself for the conversations. To browse:

    datasette chatledger.db --metadata metadata.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import chatledger
from chatledger.client.transports import ScriptedTransport
from chatledger.integrations.agents import ChatledgerSession
from chatledger.integrations.datasette import metadata


def main() -> None:
    parser = argparse.ArgumentParser(description="chatledger's SQL views and Datasette")
    parser.add_argument("--db", default="chatledger.db", help="SQLite file for the log")
    args = parser.parse_args()
    db = Path(args.db)

    scripted = ScriptedTransport()
    scripted.enqueue("A ledger is a book of accounts.")
    scripted.enqueue("Append-only: nothing is ever rewritten.")
    with chatledger.Client(store=db, transport=scripted, actor="example") as client:
        chat = client.chats.create(model="gemini-2.5-flash")
        chat.send_message("What is a ledger?")
        chat.send_message("And an append-only one?")
        session = ChatledgerSession("support-42", client)
        asyncio.run(session.add_items([{"role": "user", "content": "Where is my parcel?"}]))

    print("chat_messages, read with sqlite3:")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT version, role, kind, text, model, actor FROM chat_messages "
            "WHERE conversation_id = ? ORDER BY version, item_index",
            (chat.id,),
        ).fetchall()
    for version, role, kind, text, model, actor in rows:
        print(f"  v{version:<3} {role:<6} {kind:<8} {text!r:<45} {model} ({actor})")

    meta = db.with_name("metadata.json")
    meta.write_text(json.dumps(metadata(db.stem), indent=2))
    query = "/" + db.stem + "/chat_conversations.json?_shape=array"
    answer = subprocess.run(
        [sys.executable, "-m", "datasette", str(db), "--metadata", str(meta), "--get", query],
        capture_output=True,
        text=True,
        check=True,
    )
    print("\nchat_conversations, as Datasette serves it:")
    for row in json.loads(answer.stdout):
        print(f"  {row['conversation_id'][:12]:<12} {row['kind']:<14} {row['title']!r}")
    print(f"\nbrowse it: datasette {db} --metadata {meta}")


if __name__ == "__main__":
    main()
