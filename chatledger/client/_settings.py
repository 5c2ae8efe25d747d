"""What a conversation needs from the client that opened it, and who is writing.

:class:`ConversationSettings` is the whole of a conversation's dependency on its client:
the store, the actor, the timeouts, the retry policy and how to reach a model. A
conversation never sees the :class:`~chatledger.Client` itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import getpass
import os
from collections.abc import Callable, Iterator

from ..errors import InvalidInputError
from ..events.store import EventStore
from ._leases import MAX_TURN_LEASE
from ._retry import RetryPolicy
from ._telemetry import NOOP, Telemetry
from .transports.base import Transport

__all__ = [
    "MAX_MODEL_NAME",
    "ConversationSettings",
    "acting_as",
    "current_actor",
    "default_actor",
    "validate_actor",
    "validate_model",
    "validate_timeouts",
]

MAX_MODEL_NAME = 500


@dataclasses.dataclass(frozen=True)
class ConversationSettings:
    """Everything a conversation takes from its client (see :class:`~chatledger.Client`
    for each value's meaning)."""

    #: Where the conversation's events are read and written.
    store: EventStore
    #: Recorded on every event, unless :func:`acting_as` names someone else.
    actor: str
    #: Seconds a send waits for another writer's open turn.
    busy_timeout: float
    #: Seconds other writers wait after this writer's last event before closing its turn.
    turn_lease: float
    #: When failed model calls are retried, or None (never).
    retry_policy: RetryPolicy | None
    #: The transport that serves a model name.
    transport_for: Callable[[str], Transport]
    #: OpenTelemetry spans of model and function calls (a no-op without OpenTelemetry).
    telemetry: Telemetry = NOOP


_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatledger_actor", default=None
)


def validate_actor(actor: object) -> str:
    """``actor``, if it is a non-empty printable string of at most 200 characters."""
    if not isinstance(actor, str) or not actor or len(actor) > 200 or not actor.isprintable():
        raise InvalidInputError(
            "an actor must be a non-empty printable string of at most 200 characters"
        )
    return actor


def validate_model(model: object) -> str:
    """A model name: non-empty printable text (it becomes part of a request URL and of
    every model call event)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(f"model must be a non-empty string, got {model!r:.80}")
    if len(model) > MAX_MODEL_NAME or not model.isprintable():
        raise InvalidInputError(
            f"model must be printable text of at most {MAX_MODEL_NAME} characters, "
            f"got {model!r:.80}"
        )
    return model


def validate_timeouts(busy_timeout: object, turn_lease: object) -> tuple[float, float]:
    """``(busy_timeout, turn_lease)`` as floats, if they are numbers of seconds in range:
    ``busy_timeout >= 0`` (``inf`` waits for good) and ``0 < turn_lease <=``
    :data:`~chatledger.client._leases.MAX_TURN_LEASE`."""
    for value in (busy_timeout, turn_lease):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(
                f"busy_timeout and turn_lease must be numbers of seconds, got {value!r:.40}"
            )
    busy, lease = float(busy_timeout), float(turn_lease)  # type: ignore[arg-type]
    if not busy >= 0 or not 0 < lease <= MAX_TURN_LEASE:
        raise InvalidInputError(
            f"busy_timeout must be >= 0 and turn_lease > 0 and at most {MAX_TURN_LEASE:g} (seconds)"
        )
    return busy, lease


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record ``actor`` on every event written inside this block (this thread or task),
    instead of the client's actor::

        with chatledger.acting_as("alice@example.com"):
            chat.send_message("...")
    """
    token = _ACTOR.set(validate_actor(actor))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> str | None:
    """The actor :func:`acting_as` set for this thread or task, or None outside such a
    block (events then record the client's actor)."""
    return _ACTOR.get()


def default_actor() -> str:
    """The OS user's name (``uid:N`` where the user has no name, as in some containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
