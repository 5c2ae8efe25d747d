"""Credentials on the way out: which header values are secrets, headers that cannot be
sent, base URLs taken apart, and httpx's log records masked.

:func:`parse_base_url` takes a ``base_url`` apart once: credentials in it
(``http://user:password@host/``) become a Basic ``Authorization`` header and registered
secrets, and never travel in a URL that httpx could log or put in an exception. See
docs/security.md.
"""

from __future__ import annotations

import base64
import logging
import os
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import msgspec

from ...errors import InvalidInputError, mask_url_password, redact, register_secret

__all__ = [
    "SECRET_HEADER_WORDS",
    "Endpoint",
    "check_header",
    "parse_base_url",
    "register_credentials",
    "register_secret_headers",
]

#: A header is a credential when its name contains one of these (any case): its value
#: is then redacted from every error, log line and event. ``auth`` covers Authorization,
#: Proxy-Authorization and X-Auth-Token; ``key`` covers x-goog-api-key and api-key. Mark
#: the value of any other header secret with :func:`chatledger.errors.register_secret`.
SECRET_HEADER_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "password",
    "credential",
    "session",
)


def register_secret_headers(headers: dict[str, str] | None) -> None:
    """Treat the values of credential-like headers (see :data:`SECRET_HEADER_WORDS`) as
    secrets, redacted everywhere: the whole value, the token after a scheme ("Bearer
    <token>"), and each value of a cookie list ("a=1; b=2"). Then refuse a header that
    cannot be sent (:func:`check_header`), so that a client with one fails when it is
    made, before anything is recorded."""
    for name, value in (headers or {}).items():
        if not isinstance(value, str) or not any(
            word in name.lower() for word in SECRET_HEADER_WORDS
        ):
            continue
        register_secret(value)
        register_secret(value.split(" ", 1)[-1])
        for pair in value.split(";"):
            register_secret(pair.partition("=")[2].strip())
    for name, value in (headers or {}).items():
        check_header(name, value)


#: The attributes of a ``google.auth`` credentials object that hold secrets.
_CREDENTIAL_SECRETS = ("token", "refresh_token", "client_secret", "_refresh_token")


def register_credentials(credentials: object) -> None:
    """Treat the secrets a ``google.auth`` credentials object holds (its access token,
    refresh token and client secret) as registered secrets, redacted everywhere. Called
    when Vertex AI credentials are given or loaded, and again after each refresh, as a
    new access token is a new secret (docs/security.md)."""
    for attribute in _CREDENTIAL_SECRETS:
        value = getattr(credentials, attribute, None)
        if isinstance(value, str):
            register_secret(value)


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def check_header(name: str, value: str, *, what: str = "") -> None:
    """Refuse a header httpx could not send as it is, naming it but never its value: a
    value holding a line break would otherwise reach an error quoted in a form no
    masking recognises (and could smuggle another header), and a non-ASCII one would
    fail deep inside httpx."""
    what = what or f"the header {name!r} of http_options.headers"
    if not isinstance(name, str) or not name or not set(name) <= _TOKEN_CHARS:
        raise InvalidInputError(f"{what}: {name!r} is not a valid header name")
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}: its value must be a string, not {type(value).__name__}")
    if any(not (" " <= char <= "~" or char == "\t") for char in value):
        raise InvalidInputError(
            f"{what}: its value holds a line break, a control character or a character "
            "beyond ASCII, which an HTTP header cannot carry (the value is not shown: it "
            "may be a secret)"
        )


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A ``base_url`` taken apart by :func:`parse_base_url`."""

    #: The URL requests go to, without credentials and without a trailing slash.
    url: str
    #: ``host[:port]``, to name the server in messages.
    host: str
    #: The URL as it may be shown: any password replaced by ``***``.
    shown: str
    #: The ``Authorization: Basic ...`` value the URL's credentials make, or None.
    basic_auth: str | None = None


_PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def parse_base_url(base_url: str, *, setting: str = "base_url") -> Endpoint:
    """Check ``base_url`` and take it apart; register any credentials in it as secrets.

    ``http://user:password@host/`` is accepted: the password (as written and decoded),
    and the Basic ``Authorization`` value made from it, are registered secrets from here
    on, so no error, log line or event shows them, and requests go to the URL without
    them (httpx logs request URLs). Credentials in the proxy variables httpx reads
    (``HTTPS_PROXY`` ...) are registered too. ``setting`` names where the URL came from,
    for the error.
    """
    for name in _PROXY_VARIABLES:
        _register_url_credentials(os.environ.get(name) or "")
    if not isinstance(base_url, str):
        raise InvalidInputError(f"{setting} must be a string, got {type(base_url).__name__}")
    _register_url_credentials(base_url)
    shown = mask_url_password(base_url) or ""
    problem = _url_problem(base_url)
    if problem:
        raise InvalidInputError(
            f"invalid {setting} {shown!r}: {problem} (for example https://host or "
            "http://127.0.0.1:8000/v1)"
        )
    parts = urlsplit(base_url)
    hostname = parts.hostname or ""
    host = f"[{hostname}]" if ":" in hostname else hostname
    if parts.port is not None:
        host += f":{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")
    try:
        httpx.URL(clean)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidInputError(f"invalid {setting} {shown!r}: {exc}") from None
    basic = None
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        basic = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        register_secret(basic)
        register_secret(basic.split(" ", 1)[1])
    return Endpoint(url=clean, host=host, shown=shown, basic_auth=basic)


def _url_problem(url: str) -> str:
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        return "it holds a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not parts.hostname:
        return "it names no host"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "it cannot hold a query or a fragment ('?' or '#')"
    return ""


def _register_url_credentials(url: str) -> None:
    """Register the password of a URL (``scheme://user:password@host``) as a secret, as
    written and decoded; a user name alone (``scheme://token@host``) counts as one too."""
    _, has_authority, rest = url.partition("//")
    userinfo, has_userinfo, _ = rest.split("/", 1)[0].rpartition("@")
    if not has_authority or not has_userinfo:
        return
    user, has_password, password = userinfo.partition(":")
    for value in (password, unquote(password)) if has_password else (user, unquote(user)):
        register_secret(value)


class _RedactSecrets(logging.Filter):
    """Masks registered secrets in the records of httpx's and httpcore's loggers, which
    log response headers at DEBUG: a server that echoes a credential in a header must not
    put it in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACT_SECRETS = _RedactSecrets()
# Logger filters apply to records made on that very logger, so each one httpx and
# httpcore log on is named.
for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
):
    logging.getLogger(_name).addFilter(_REDACT_SECRETS)
