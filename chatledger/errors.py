"""Every error chatledger raises, in one hierarchy.

Errors from other libraries (httpx, sqlite3, psycopg, pydantic) are translated at the
boundary where they happen, so callers only ever need to catch these::

    ChatledgerError
    ├── InvalidInputError (also a ValueError)    bad message, history, config or file
    ├── APIError                                 the model server said no
    │   ├── ClientError                          4xx
    │   └── ServerError                          5xx
    ├── ModelConnectionError                     could not reach the model server
    │   └── ModelTimeoutError                    it did not answer in time
    ├── InvalidResponseError                     the server answered something unusable
    ├── ChatStateError                           the chat cannot do that now
    │   └── ConversationBusyError                another writer holds the current turn
    ├── ReplayMismatchError                      a replayed request differs from the log
    ├── FunctionCallingError                     automatic function calling misconfigured
    └── StoreError                               the event log
        ├── ConcurrencyError                     expected_version did not match
        ├── IntegrityError                       hash chain or envelope broken
        ├── NotFoundError                        unknown conversation
        └── StoreUnavailableError                locked, read-only, full or unreachable

Messages say what happened and what to do about it. No message, ``repr`` or ``args``
ever contains an API key: values that might hold one are passed through
:func:`redact` before they reach an error.
"""

from __future__ import annotations

import re
import threading
from typing import Any

__all__ = [
    "APIError",
    "ChatStateError",
    "ChatledgerError",
    "ClientError",
    "ConcurrencyError",
    "ConversationBusyError",
    "FunctionCallingError",
    "IntegrityError",
    "InvalidInputError",
    "InvalidResponseError",
    "ModelConnectionError",
    "ModelTimeoutError",
    "NotFoundError",
    "ReplayMismatchError",
    "ServerError",
    "StoreError",
    "StoreUnavailableError",
    "holds_secret",
    "mask_echoed_secrets",
    "mask_url_password",
    "redact",
    "register_secret",
]

# Secrets registered by clients (API keys, secret headers). Kept as a module-level set so
# that an error raised deep inside a transport or store can be scrubbed without the
# client being in scope. Only the values are kept, never where they came from. Replaced,
# never changed in place (under _SECRETS_LOCK): a secret registered by one thread (a
# Vertex AI token refreshed in a worker, docs/security.md) while another iterates the
# registry to redact must not break that iteration.
_SECRETS: frozenset[str] = frozenset()
# The same, longest first: a secret that holds a shorter one is masked whole.
_SECRETS_LONGEST_FIRST: tuple[str, ...] = ()
_SECRETS_LOCK = threading.Lock()
_KEY_PATTERN = re.compile(r"(key=)[^&\s'\"]+", re.IGNORECASE)


#: The shortest registered secret masked inside a model's reply (see
#: :func:`mask_echoed_secrets`): a shorter one cannot be told from an ordinary word.
ECHO_MIN_LENGTH = 8


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` removes it from any text."""
    global _SECRETS, _SECRETS_LONGEST_FIRST
    if value and len(value) >= 4 and value not in _SECRETS:
        with _SECRETS_LOCK:
            _SECRETS = _SECRETS | {value}
            _SECRETS_LONGEST_FIRST = tuple(sorted(_SECRETS, key=len, reverse=True))


def holds_secret(text: str) -> bool:
    """Whether ``text`` contains a registered secret of at least :data:`ECHO_MIN_LENGTH`
    characters (shorter ones cannot be told from ordinary text)."""
    return any(len(secret) >= ECHO_MIN_LENGTH and secret in text for secret in _SECRETS)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and any ``key=`` query value masked."""
    for secret in _SECRETS_LONGEST_FIRST:
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub(r"\1***", text)


def mask_url_password(url: str | None) -> str | None:
    """``url`` with the password of the credentials it may hold
    (``scheme://user:password@host``) as ``***``; a lone user name
    (``scheme://token@host``) is masked whole, as it is often a token."""
    if not isinstance(url, str) or "@" not in url:
        return url
    scheme, has_authority, rest = url.partition("//")
    authority, slash, path = rest.partition("/")
    userinfo, has_userinfo, hostport = authority.rpartition("@")
    if not has_authority or not has_userinfo:
        return url
    user, has_password, _ = userinfo.partition(":")
    masked = f"{user}:***" if has_password else "***"
    return f"{scheme}//{masked}@{hostport}{slash}{path}"


def mask_echoed_secrets(value: Any) -> Any:
    """``value`` (a decoded JSON reply) with every registered secret of at least
    :data:`ECHO_MIN_LENGTH` characters masked as ``***`` in its strings and keys.

    For what a model server *answers*: a server that echoes a credential inside a
    successful reply must not put it in the immutable log. Unlike :func:`redact` it
    leaves ``key=...`` alone (a model may well write ``dict(key=value)``) and shorter
    secrets (a cookie value ``dark`` would mask every "dark" in every reply). Base64
    payloads (``inlineData.data``) and ``thoughtSignature`` values are not text and are
    kept as sent. Returns ``value`` itself when there is nothing to mask.
    """
    secrets = [secret for secret in _SECRETS_LONGEST_FIRST if len(secret) >= ECHO_MIN_LENGTH]
    if not secrets:
        return value
    return _mask(value, secrets)


# Values that are not text, kept as sent: opaque tokens the server wants back unchanged
# (anywhere), and base64 bytes (``data`` inside ``inlineData``).
_OPAQUE = frozenset({"thoughtSignature", "thought_signature"})
_OPAQUE_INSIDE = {name: _OPAQUE | {"data"} for name in ("inlineData", "inline_data")}


def _mask(value: Any, secrets: list[str], opaque: frozenset[str] = _OPAQUE) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {
            _mask(name, secrets): item
            if name in opaque
            else _mask(item, secrets, _OPAQUE_INSIDE.get(name, _OPAQUE))
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item, secrets) for item in value]
    return value


class ChatledgerError(Exception):
    """Base class of every error raised by chatledger."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInputError(ChatledgerError, ValueError):
    """A message, history, config, event or file that chatledger cannot accept.

    Raised before anything is sent or recorded, so the log is unchanged.
    """


class APIError(ChatledgerError):
    """The model server answered with an error.

    ``str(error)`` is ``"<code> <status>. <details>"`` as in google-genai, where
    ``details`` is the parsed error body.
    """

    code: int
    status: str | None
    details: Any
    response: Any

    def __init__(
        self,
        code: int,
        response_json: Any,
        response: Any = None,
    ) -> None:
        if isinstance(response_json, list) and len(response_json) == 1:
            response_json = response_json[0]
        self.details = _redact_json(response_json)
        self.response = response
        self.status = _error_field(self.details, "status")
        self.error_message: str | None = _error_field(self.details, "message")
        given = _error_field(response_json, "code")
        self.code = int(code or (given if isinstance(given, int) else 0))
        super().__init__(f"{self.code} {self.status}. {self.details}")

    @classmethod
    def from_status(cls, code: int, response_json: Any, response: Any = None) -> APIError:
        """Build the subclass that fits ``code``: 4xx ClientError, 5xx ServerError."""
        if 400 <= code < 500:
            return ClientError(code, response_json, response)
        if 500 <= code < 600:
            return ServerError(code, response_json, response)
        return APIError(code, response_json, response)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.details, None))


class ClientError(APIError):
    """The request was refused (HTTP 4xx): fix the request, the key or the quota."""


class ServerError(APIError):
    """The server failed (HTTP 5xx): retrying later may help."""


class ModelConnectionError(ChatledgerError):
    """The model server could not be reached, or the connection dropped mid-answer."""


class ModelTimeoutError(ModelConnectionError):
    """The model server did not answer within the configured timeout."""


class InvalidResponseError(ChatledgerError):
    """The model server answered, but with something that is not a valid response."""


class ChatStateError(ChatledgerError):
    """The chat cannot do this in its current state (for example, rewind an empty history)."""


class ConversationBusyError(ChatStateError):
    """Another writer (thread, process or host) holds the conversation's current turn."""


class ReplayMismatchError(ChatledgerError):
    """Code under replay built a request that differs from the recorded one.

    ``difference`` says where: turn, model call, field, recorded value and new value.
    """

    def __init__(self, difference: Any) -> None:
        self.difference = difference
        super().__init__(f"replay differs from the log at {difference}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.difference,))


class FunctionCallingError(ChatledgerError):
    """Automatic function calling cannot run as configured."""


class StoreError(ChatledgerError):
    """The event log failed or refused an operation."""


class ConcurrencyError(StoreError):
    """An append's ``expected_version`` did not match the stream's current version.

    Someone else appended first. Read the new events and decide again.
    """

    def __init__(self, conversation_id: str, expected_version: int, actual_version: int) -> None:
        self.conversation_id = conversation_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"conversation {conversation_id!r} is at version {actual_version}, "
            f"not the expected {expected_version}: another writer appended first; "
            "read the new events and retry"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.conversation_id, self.expected_version, self.actual_version))


class IntegrityError(StoreError):
    """The log is not what it should be: a broken hash chain, a gap, a reused event id."""


class NotFoundError(StoreError):
    """No conversation with that id exists in this store."""


class StoreUnavailableError(StoreError):
    """The store cannot be used now: locked, read-only, out of space, corrupt or unreachable."""


def _error_field(response_json: Any, name: str) -> Any:
    if not isinstance(response_json, dict):
        return None
    if name in response_json:
        return response_json[name]
    inner = response_json.get("error")
    if isinstance(inner, dict):
        return inner.get(name)
    return None


def _redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    return value
