"""A LangChain chain whose message history is chatledger's log.

    pip install 'chatledger[langchain]'
    python examples/langchain_history.py [--db PATH]

The chat model is LangChain's own offline ``GenericFakeChatModel`` (it answers from a
list), so this runs anywhere; put any LangChain chat model in its place. The history
keeps every message as an event: clear() is an event too, so the history as it was
before is still there to read, fork or verify.
"""

from __future__ import annotations

import argparse

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

import chatledger
from chatledger.integrations.langchain import ChatledgerMessageHistory


def main() -> None:
    parser = argparse.ArgumentParser(description="LangChain histories in chatledger's log")
    parser.add_argument("--db", default="langchain.db", help="SQLite file (or URL) for the log")
    args = parser.parse_args()

    model = GenericFakeChatModel(messages=iter(["Paris.", "Rome.", "Lima."]))
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one word."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | model

    with chatledger.Client(store=args.db, actor="example") as client:
        history = ChatledgerMessageHistory("geography", client)
        history.clear()  # a fresh start on every run of the example (an event too)
        versions = []
        for question in ("Capital of France?", "And of Italy?"):
            answer = chain.invoke({"history": history.messages, "question": question})
            history.add_messages([HumanMessage(content=question), answer])
            versions.append(history.version)  # the version of the event just written
            print(f"> {question}\n{answer.content}")

        print(f"\nthe history holds {len(history.messages)} messages (version {history.version})")
        branch = history.fork(at=versions[0])  # after the first question and answer
        answer = chain.invoke({"history": branch.messages, "question": "And of Peru?"})
        branch.add_messages([HumanMessage(content="And of Peru?"), answer])
        print(f"a fork after the first answer: {[m.content for m in branch.messages]}")

        history.clear()
        print(f"after clear(): {len(history.messages)} messages; the log still has them:")
        print(
            f"  as of version {history.version - 1}: {len(history.messages_as_of(history.version - 1))}"
        )
        print(f"verify: {'ok' if history.verify().ok else 'FAILED'}")
        print(f"\nsee it with: chatledger --db {args.db} log geography")


if __name__ == "__main__":
    main()
