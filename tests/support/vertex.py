"""google-genai 3.3.0 and chatledger both on Vertex AI, pointed at one loopback server.

:class:`VertexDifferential` is :class:`~tests.support.differential.Differential` with
both clients made for Vertex AI: ``Client(vertexai=True, project=..., location=...,
credentials=...)`` with a ``google.oauth2.credentials.Credentials`` object (a static
test token, or a refresh token whose token endpoint is the same loopback server), or
express mode (``vertexai=True`` with an API key). No request leaves the machine.

Headers are compared with :func:`comparable_headers`: everything either library sends,
except what httpx adds per connection (``host``, ``content-length``, ``connection``,
``accept-encoding``: httpx offers zstd when the ``zstandard`` package is importable when
its client is made) and the library's own name and version in ``user-agent`` and
``x-goog-api-client`` (``google-genai-sdk/3.3.0+chat`` or ``...+afc+chat`` against
``chatledger/<version>``; the ``gl-python/<version>`` label must be the same).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.oauth2.credentials import Credentials

import chatledger
from tests.support.differential import Differential
from tests.support.gemini_server import GeminiServer, RecordedRequest

__all__ = [
    "EXPRESS_KEY",
    "LOCATION",
    "PROJECT",
    "QUOTA_PROJECT",
    "TOKEN",
    "VertexDifferential",
    "comparable_headers",
    "expired_credentials",
    "refreshable_credentials",
    "static_credentials",
    "token_reply",
    "write_service_account_file",
]

TOKEN = "ya29.vertex-test-token-DO-NOT-LEAK-7e31"
EXPRESS_KEY = "vertex-express-key-DO-NOT-LEAK-52d0"
PROJECT = "ledger-test-project"
LOCATION = "us-central1"
QUOTA_PROJECT = "ledger-quota-project"
REFRESH_TOKEN = "1//refresh-token-DO-NOT-LEAK-c0ff"
CLIENT_SECRET = "client-secret-DO-NOT-LEAK-b4d9"

_PER_CONNECTION = frozenset({"host", "content-length", "connection", "accept-encoding"})
# google-genai adds "+chat" (and "+afc" once automatic function calling is on) to its label.
_LIBRARY_LABELS = {"genai": "google-genai-sdk/3.3.0+", "chatledger": "chatledger/"}


def static_credentials(token: str = TOKEN) -> Credentials:
    """A valid access token that never needs refreshing (and cannot be refreshed)."""
    return Credentials(token=token, quota_project_id=QUOTA_PROJECT)  # type: ignore[no-untyped-call]


def refreshable_credentials(
    token_uri: str,
    token: str | None = None,
    *,
    refresh_token: str = REFRESH_TOKEN,
    client_secret: str = CLIENT_SECRET,
) -> Credentials:
    """User credentials with a refresh token whose token endpoint is ``token_uri``
    (google-auth POSTs the refresh there); ``token`` None: no token yet."""
    return Credentials(  # type: ignore[no-untyped-call]
        token=token,
        refresh_token=refresh_token,
        client_id="test-client-id",
        client_secret=client_secret,
        token_uri=token_uri,
        quota_project_id=QUOTA_PROJECT,
    )


def expired_credentials(token_uri: str, token: str = TOKEN, **secrets: str) -> Credentials:
    """:func:`refreshable_credentials` holding ``token``, expired an hour ago."""
    credentials = refreshable_credentials(token_uri, token, **secrets)
    # google-auth compares against a naive UTC time.
    credentials.expiry = datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None
    ) - datetime.timedelta(hours=1)
    return credentials


def write_service_account_file(path: Path, token_uri: str, project: str = PROJECT) -> Path:
    """A service account key file (a fresh RSA key) whose token endpoint is
    ``token_uri``: what ``GOOGLE_APPLICATION_CREDENTIALS`` names for ADC. google-auth
    gets its token by POSTing a JWT it signs with the key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "test-key-id",
        "private_key": pem,
        "client_email": f"ledger@{project}.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path


def token_reply(access_token: str) -> dict[str, Any]:
    """What Google's OAuth token endpoint answers to a refresh."""
    return {"access_token": access_token, "expires_in": 3600, "token_type": "Bearer"}


def comparable_headers(request: RecordedRequest, library: str) -> dict[str, str]:
    """The headers of ``request`` without the per-connection ones, and with the
    library's name and version in ``user-agent`` / ``x-goog-api-client`` replaced by
    ``<library>`` (checked to be there, followed by the same Python label)."""
    python = "gl-python/" + sys.version.split()[0]
    label = _LIBRARY_LABELS[library]
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in _PER_CONNECTION:
            continue
        if name in ("user-agent", "x-goog-api-client"):
            head, _, tail = value.partition(" ")
            assert head.startswith(label), (library, name, value)
            assert tail == python, (library, name, value)
            value = f"<library> {tail}"
        headers[name] = value
    return headers


class VertexDifferential(Differential):
    """Both libraries on Vertex AI (``mode``: "token" with ``credentials``, or
    "express" with an API key), on ``server``; chatledger on a real SQLite file.

    ``credentials`` makes a fresh credentials object for each client (each library
    then refreshes its own, as two processes would)."""

    def __init__(
        self,
        server: GeminiServer,
        db_path: Path,
        mode: str = "token",
        credentials: Any = None,
        http_options: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.db_path = db_path
        self.mode = mode
        self.make_credentials = credentials or static_credentials
        self.options: dict[str, Any] = {"base_url": server.base_url, **(http_options or {})}
        self.genai = genai.Client(http_options=dict(self.options), **self.vertex_kwargs())  # type: ignore[arg-type]
        self.ledger = chatledger.Client(
            http_options=dict(self.options), store=str(db_path), **self.vertex_kwargs()
        )
        self._fresh_clients: list[chatledger.Client] = []

    def vertex_kwargs(self) -> dict[str, Any]:
        """The Vertex AI arguments each client is made with."""
        if self.mode == "express":
            return {"vertexai": True, "api_key": EXPRESS_KEY}
        return {
            "vertexai": True,
            "project": PROJECT,
            "location": LOCATION,
            "credentials": self.make_credentials(),
        }

    def _fresh_client(self) -> chatledger.Client:
        return chatledger.Client(
            http_options=dict(self.options), store=str(self.db_path), **self.vertex_kwargs()
        )
