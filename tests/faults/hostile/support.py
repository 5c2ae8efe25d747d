"""What the hostile-input tests share: strategies and catalogues of hostile values,
the state of a log (to prove a refused input changed nothing), the tally for the fault
ledger, and the mutations a forger makes. See ``__init__`` for what the suite covers."""

from __future__ import annotations

import hashlib
import importlib.util
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import chatledger
from chatledger.errors import ChatledgerError
from chatledger.events.audit import export_conversation
from chatledger.events.store import EventStore
from chatledger.types import Content, Part
from tests.conftest import API_KEY
from tests.faults import ledger
from tests.support.gemini_server import GeminiServer

AREA = "input"
MODEL = "gemini-2.5-flash"
SQL = "'; DROP TABLE events; --"
VERIFIER = Path(__file__).resolve().parents[3] / "examples" / "verify_export.py"
ENVELOPE = (
    "conversation_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
)

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)

# Strings that have broken parsers, drivers, terminals and hash chains somewhere.
NASTY_STRINGS = [
    "",
    " ",
    SQL,
    "' OR '1'='1",
    '"; DELETE FROM streams; --',
    "Robert'); DROP TABLE events;--",
    "\x00",
    "a\x00b",
    "\x1b[2J\x1b[31mred",
    "\r\n\t\x0b\x0c",
    "\x7f\x80\x9f",
    "\u2028\u2029",
    "\ufeff",
    "\u202eevil",
    "\U0010ffff",
    "\U0001f600",
    "\ud800",
    "\udcff",
    "a\udfffb",
    "\\u0000",
    "\\ud800",
    "null",
    "{}",
    "[",
    '{"a":',
    "%s%s%n",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    "models/../../x",
    "a?b&c#d",
    "ﷺ" * 10,
    "x" * 1000,
]
# Surrogates and control characters included: the default text strategy leaves them out.
ANY_CHARS = st.characters(exclude_categories=())
HOSTILE_TEXT = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(ANY_CHARS, max_size=12))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 10**40, 0]),
    st.floats(),  # NaN and infinities too
    HOSTILE_TEXT,
    st.binary(max_size=8),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(HOSTILE_TEXT, children, max_size=3),
        st.dictionaries(st.integers(), children, max_size=2),
        st.tuples(children, children),
    ),
    max_leaves=8,
)
PART_KEYS = st.sampled_from(
    [
        "text",
        "inline_data",
        "inlineData",
        "file_data",
        "function_call",
        "functionCall",
        "function_response",
        "thought",
        "thought_signature",
        "video_metadata",
        "executable_code",
    ]
)
BLOB_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "data": st.one_of(st.binary(max_size=16), JSONISH),
        "mime_type": JSONISH,
        "mimeType": JSONISH,
    },
)
CALL_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(HOSTILE_TEXT, JSONISH),
        "args": st.one_of(st.dictionaries(HOSTILE_TEXT, JSONISH, max_size=3), JSONISH),
        "id": JSONISH,
        "response": st.one_of(st.dictionaries(HOSTILE_TEXT, JSONISH, max_size=2), JSONISH),
    },
)
PART_LIKE = st.dictionaries(
    st.one_of(PART_KEYS, HOSTILE_TEXT),
    st.one_of(HOSTILE_TEXT, BLOB_LIKE, CALL_LIKE, JSONISH),
    max_size=3,
)
CONTENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["user", "model", "system", "function", ""]), JSONISH),
        "parts": st.one_of(st.lists(st.one_of(PART_LIKE, HOSTILE_TEXT), max_size=3), JSONISH),
    },
)


def _part_object(data: dict[Any, Any], how: str, value: Any) -> Any:
    """A Part as a caller may hold one: validated, built without validation, or changed
    after validation by attribute assignment (pydantic does not re-validate either)."""
    if how == "validated":
        try:
            return Part.model_validate(data)
        except ValueError:
            return Part(text="fallback")
    if how == "constructed":
        return Part.model_construct(text=value)
    part = Part(text="x")
    setattr(part, how, value)
    return part


PART_OBJECTS = st.builds(
    _part_object,
    PART_LIKE,
    st.sampled_from(
        ["validated", "validated", "constructed", "text", "function_call", "inline_data", "thought"]
    ),
    JSONISH,
)


@dataclass
class FileLike:
    uri: Any
    mime_type: Any


FileLike.__name__ = "File"  # what chatledger recognises a File-like object by

MESSAGES = st.one_of(
    HOSTILE_TEXT,
    st.binary(max_size=8),
    JSONISH,
    PART_LIKE,
    CONTENT_LIKE,
    PART_OBJECTS,
    st.builds(
        lambda parts: Content.model_construct(role="user", parts=parts),
        st.lists(PART_OBJECTS, max_size=2),
    ),
    st.lists(st.one_of(HOSTILE_TEXT, PART_OBJECTS, PART_LIKE, SCALARS), max_size=4),
    st.builds(FileLike, st.one_of(HOSTILE_TEXT, JSONISH), st.one_of(HOSTILE_TEXT, JSONISH)),
)
CONFIGS = st.one_of(
    JSONISH,
    st.dictionaries(
        st.sampled_from(
            [
                "temperature",
                "top_k",
                "system_instruction",
                "systemInstruction",
                "labels",
                "stop_sequences",
                "tools",
                "tool_config",
                "safety_settings",
                "response_schema",
                "automatic_function_calling",
                "http_options",
                "thinking_config",
                "max_output_tokens",
            ]
        )
        | HOSTILE_TEXT,
        st.one_of(
            JSONISH,
            HOSTILE_TEXT,
            st.lists(st.one_of(PART_LIKE, HOSTILE_TEXT), max_size=2),
            CONTENT_LIKE,
        ),
        max_size=3,
    ),
)
HISTORIES = st.one_of(
    JSONISH,
    st.lists(st.one_of(CONTENT_LIKE, JSONISH), max_size=4),
    st.lists(
        st.tuples(
            st.sampled_from(["user", "model"]), st.lists(HOSTILE_TEXT, min_size=1, max_size=2)
        ).map(lambda pair: {"role": pair[0], "parts": [{"text": text} for text in pair[1]]}),
        max_size=4,
    ),
)


# --------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class LogState:
    """Everything a store holds, and the bytes of its files: equal means unchanged."""

    events: tuple[chatledger.RecordedEvent, ...]
    streams: tuple[Any, ...]
    files: str


def all_events(store: EventStore) -> list[chatledger.RecordedEvent]:
    events: list[chatledger.RecordedEvent] = []
    while page := store.read_all(after_position=events[-1].position if events else 0, limit=1000):
        events.extend(page)
    return events


def file_digest(db_path: Path | None) -> str:
    """sha256 of the database file and its WAL (the -shm file holds readers' marks,
    which reading changes)."""
    if db_path is None:
        return ""
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        path = Path(str(db_path) + suffix)
        digest.update(path.read_bytes() if path.exists() else b"<none>")
    return digest.hexdigest()


def log_state(store: EventStore, db_path: Path | None = None) -> LogState:
    return LogState(tuple(all_events(store)), tuple(store.conversations()), file_digest(db_path))


class Tally:
    """Counts the inputs tried and the invariants found broken (for the fault ledger), and
    how inputs were answered (printed with ``pytest -s``, to see what a run exercised)."""

    def __init__(self) -> None:
        self.inputs = 0
        self.broken = 0
        self.answers: Counter[str] = Counter()

    def note(self, error: BaseException | None) -> None:
        answer = "accepted" if error is None else f"refused: {type(error).__name__}"
        self.answers[answer] += 1
        if currently_in_test_context():
            hypothesis_event(answer)

    def record(self, operation: str, *, inputs: int | None = None) -> None:
        """After the test's checks: no invariant broken, then count it in the ledger."""
        assert self.broken == 0
        if self.answers:
            print(f"\n{operation}: {self.inputs} inputs, {dict(self.answers.most_common())}")
        ledger.record(
            AREA,
            operation,
            inputs=self.inputs if inputs is None else inputs,
            invariants_broken=self.broken,
        )

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.broken += 1
            raise AssertionError(what)

    def refused(
        self, error: BaseException | None, before: LogState, after: LogState, what: str
    ) -> None:
        """A refused input: a clear error, and the log exactly as it was."""
        self.check(isinstance(error, ChatledgerError), f"{what}: not a clear error: {error!r:.300}")
        self.check(before == after, f"{what}: the log changed although the input was refused")


def outcome(action: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``action``: (result, None), or (None, the exception) for any Exception."""
    try:
        return action(), None
    except Exception as exc:
        return None, exc


def clear_replies(server: GeminiServer) -> None:
    """Drop the replies scripted for inputs that were refused before any request."""
    server.clear()


def verifier() -> Any:
    """examples/verify_export.py as a module: the standard-library verifier."""
    spec = importlib.util.spec_from_file_location("verify_export", VERIFIER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stdlib_verifies(store: EventStore, conversation_id: str) -> bool:
    lines = list(export_conversation(store, conversation_id))
    _conversations, _events, problems = verifier().verify(lines)
    return not problems


def reopen(client: chatledger.Client, conversation_id: str) -> chatledger.Chat:
    """The conversation as a fresh process sees it: folded from the log."""
    other = chatledger.Client(api_key=API_KEY, store=client.store, actor="reader")
    return other.chats.get(conversation_id)


def as_written(model: Any) -> dict[str, Any]:
    """A model's JSON, read back and written again: what the log should hold of it."""
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    return type(model).model_validate(dumped).to_wire()  # type: ignore[no-any-return]


def wires(contents: list[Content]) -> list[dict[str, Any]]:
    return [content.to_wire() for content in contents]


# --------------------------------------------------------------------------- mutation


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def similar(value: Any, rng: random.Random, replacement: Any) -> Any:
    """A value like ``value`` (same JSON type, most of the time), or ``replacement``."""
    if rng.random() < 0.3:
        return replacement
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([0, -1, value + 1, 2**63, 10**30])
    if isinstance(value, float):
        return rng.choice([0.0, -1.5, 1e308, 5e-324])
    if isinstance(value, str):
        return rng.choice([*NASTY_STRINGS, value + "!", "", "user", "model", "STOP"])
    if isinstance(value, dict):
        return {
            **value,
            rng.choice(["text", "role", "parts", "functionCall", "x", ""]): replacement,
        }
    if isinstance(value, list):
        return rng.choice([[], [*value, replacement], [*value, *value], value[::-1]])
    return replacement


def mutate(value: Any, rng: random.Random, replacement: Any, stop: float = 0.25) -> Any:
    """``value`` with one randomly chosen node replaced (or a key dropped)."""
    if not isinstance(value, (dict, list)) or not value or rng.random() < stop:
        return similar(value, rng, replacement)
    if isinstance(value, dict):
        key = rng.choice(list(value))
        if rng.random() < 0.2:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: mutate(value[key], rng, replacement, stop)}
    index = rng.randrange(len(value))
    return [*value[:index], mutate(value[index], rng, replacement, stop), *value[index + 1 :]]


def mutate_event(event: dict[str, Any], rng: random.Random, replacement: Any) -> Any:
    """An exported event with one value changed: mostly deep in its data, where a forger
    who rehashes has the most room; sometimes its metadata or envelope."""
    roll = rng.random()
    if roll < 0.75 and isinstance(event.get("data"), dict):
        return {**event, "data": mutate(event["data"], rng, replacement, stop=0.1)}
    if roll < 0.85:
        return {**event, "metadata": mutate(event.get("metadata"), rng, replacement, stop=0.3)}
    return mutate(event, rng, replacement)
