"""What a running server is allowed to do, and who may use it.

Nothing here imports the web stack: the ``serve`` command checks its options (and refuses
to bind beyond loopback without tokens) before anything is started.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import InvalidInputError, register_secret

if TYPE_CHECKING:
    from .audit import CheckpointFile

__all__ = [
    "DEFAULT_MAX_BODY",
    "MIN_TOKEN_LENGTH",
    "ServeSettings",
    "TokenTable",
    "is_loopback_host",
    "load_token_file",
    "parse_token",
    "validate_actor_name",
]

#: Request bodies larger than this are refused with 413 (a message, a config, a history).
DEFAULT_MAX_BODY = 1024 * 1024
#: An access token shorter than this is refused: it could be guessed.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512
MAX_ACTOR_LENGTH = 200
#: A token file larger than this is not a token file.
MAX_TOKEN_FILE = 1024 * 1024


def validate_actor_name(actor: object) -> str:
    """An actor name as the library records it: non-empty printable text, at most 200
    characters (the rule of ``chatledger.Client(actor=)``)."""
    if (
        not isinstance(actor, str)
        or not actor
        or len(actor) > MAX_ACTOR_LENGTH
        or not actor.isprintable()
        or actor != actor.strip()
    ):
        raise InvalidInputError(
            "an actor name must be printable text of 1 to 200 characters without leading "
            "or trailing spaces"
        )
    return actor


def _check_token(token: str, where: str) -> str:
    if not (MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH):
        raise InvalidInputError(
            f"{where}: an access token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} "
            "characters long (make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise InvalidInputError(
            f"{where}: an access token must be printable ASCII without spaces "
            "(it travels in an Authorization header)"
        )
    return token


def parse_token(pair: str, where: str = "--token") -> tuple[str, str]:
    """``NAME=TOKEN`` as (actor, token). The token is never part of an error message."""
    name, sep, token = pair.partition("=")
    if not sep:
        raise InvalidInputError(f"{where}: expected NAME=TOKEN (the actor's name, then its token)")
    try:
        validate_actor_name(name.strip())
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc.message}") from None
    return name.strip(), _check_token(token.strip(), where)


def load_token_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The ``NAME=TOKEN`` lines of a token file (blank lines and ``#`` comments skipped)."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the token file {where}: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_FILE:
        raise InvalidInputError(f"the token file {where} is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"the token file {where} is not UTF-8 text") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            pairs.append(parse_token(stripped, f"{where} line {number}"))
    return pairs


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """Access tokens, kept only as SHA-256 digests, each naming the actor it acts as.

    Every token is also registered with :func:`chatledger.errors.register_secret`, so the
    library masks it in any error message or event that could ever hold it.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._by_digest: dict[bytes, str] = {}
        for actor, token in pairs:
            validate_actor_name(actor)
            _check_token(token, f"the token of {actor!r}")
            digest = _digest(token)
            if digest in self._by_digest and self._by_digest[digest] != actor:
                raise InvalidInputError(
                    f"the same token is given to {self._by_digest[digest]!r} and {actor!r}: "
                    "each actor needs a token of its own"
                )
            self._by_digest[digest] = actor
            register_secret(token)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"<TokenTable {len(self)} tokens>"

    @property
    def actors(self) -> list[str]:
        return sorted(set(self._by_digest.values()))

    def identify(self, token: str) -> str | None:
        """The actor ``token`` belongs to, or None. Compares digests in constant time and
        looks at every entry, so timing tells nothing about which tokens exist."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = _digest(token)
        found: str | None = None
        for known, actor in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = actor
        return found


def is_loopback_host(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine: ``localhost`` or an
    address in 127.0.0.0/8 or ``::1``. Any other name or address (``0.0.0.0`` included)
    is reachable from elsewhere."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class ServeSettings:
    """How a server behaves. Built by the ``serve`` command, or by hand for embedding::

    settings = ServeSettings(tokens=TokenTable([("alice", token)]), read_only=True)
    app = create_app(client, settings)
    """

    #: Access tokens; empty means no authentication (only allowed on loopback).
    tokens: TokenTable = field(default_factory=TokenTable)
    #: The actor recorded without tokens (default: the client's, i.e. the OS user).
    actor: str | None = None
    #: Refuse every request that would write to the log.
    read_only: bool = False
    #: The largest request body accepted, in bytes.
    max_body: int = DEFAULT_MAX_BODY
    #: Host header names accepted besides loopback names and ``bind_host`` (DNS
    #: rebinding protection); ``("*",)`` accepts any (only sensible with tokens).
    allowed_hosts: tuple[str, ...] | None = None
    #: The address the server is bound to (for the Host check and the bind rule).
    bind_host: str = "127.0.0.1"
    #: The model the pages offer first for a new conversation.
    default_model: str = "local"
    #: Sends (model calls) running at once; more are refused with 503.
    max_sends: int = 8
    #: Live event followers (server-sent events) at once; more are refused with 503.
    max_followers: int = 32
    #: Conversations per page of a listing.
    page_size: int = 25
    #: Signed checkpoints the whole-store audit proves the log extends (``--checkpoint``).
    checkpoints: CheckpointFile | None = None
    #: Extra labels for the pages (title shown in the header).
    title: str = "chatledger"
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.actor is not None:
            validate_actor_name(self.actor)
        if self.max_body < 1024:
            raise InvalidInputError("max_body must be at least 1024 bytes")
        if self.max_sends < 1 or self.max_followers < 1 or not 1 <= self.page_size <= 500:
            raise InvalidInputError("max_sends and max_followers must be >= 1, page_size 1..500")
        self.check_bind()

    def check_bind(self) -> None:
        """Refuse a server reachable from other hosts without access tokens."""
        if not self.tokens and not is_loopback_host(self.bind_host):
            raise InvalidInputError(
                f"refusing to serve on {self.bind_host} without an access token: anyone who "
                "can reach it could read and write the log. Give --token NAME=TOKEN or "
                "--token-file FILE, or bind to 127.0.0.1"
            )

    def host_names(self) -> list[str]:
        """The Host header names the server answers to: the loopback names, the bound
        address and ``allowed_hosts``; any name (``"*"``) when bound to every address
        (tokens are required then, and they are what protects it)."""
        names = list(LOOPBACK_NAMES)
        bind = self.bind_host.strip().strip("[]")
        if bind in ("0.0.0.0", "::", "") and not self.allowed_hosts:
            return ["*"]
        if bind not in names and bind not in ("0.0.0.0", "::", ""):
            names.append(f"[{bind}]" if ":" in bind else bind)
        names.extend(name.lower() for name in self.allowed_hosts or () if name not in names)
        return names
