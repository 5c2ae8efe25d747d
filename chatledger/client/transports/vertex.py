"""Gemini on Vertex AI: which endpoint google-genai 3.3.0 would pick, and the transport.

:func:`resolve_vertex` decides, from the arguments of :class:`chatledger.Client` and the
environment, whether a client talks to Vertex AI and with what: a project and location
with Google Cloud credentials (Application Default Credentials when none are given), or
an API key (express mode). It follows ``google.genai._api_client.BaseApiClient`` of
google-genai 3.3.0 step by step, so that the same arguments and variables reach the same
endpoint with the same credentials. See docs/chat-api.md ("Vertex AI").

:class:`VertexTransport` sends what google-genai sends for the same chat: the URL
``{base}/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent``
(``:streamGenerateContent?alt=sse`` when streamed; express mode has no
``projects/.../locations/...`` prefix), an ``Authorization: Bearer`` access token and
``x-goog-user-project`` (the credentials' quota project), or ``x-goog-api-key``. The
token is a secret like the API key (docs/security.md): registered for redaction when it
is obtained, so it never reaches an event, an export, an error or a log line.

``google-auth`` is needed only for Google Cloud credentials (the ``vertex`` extra:
``pip install 'chatledger[vertex]'``); it is imported when first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from ..._version import __version__
from ...errors import ChatledgerError, InvalidInputError, ModelConnectionError, register_secret
from ...types import HttpOptions
from ._credentials import register_credentials
from .base import ModelRequest
from .gemini import GeminiTransport, check_model_name

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "VertexSettings",
    "VertexTransport",
    "check_vertex_config",
    "load_default_credentials",
    "resolve_vertex",
    "vertex_body",
    "vertex_model_path",
]

logger = logging.getLogger(__name__)

#: The OAuth scope google-genai asks Application Default Credentials for.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Locations served from a multi-regional endpoint (``aiplatform.{us,eu}.rep...``).
_MULTI_REGIONAL_LOCATIONS = frozenset({"us", "eu"})
DEFAULT_VERTEX_API_VERSION = "v1beta1"
_EXTRA_HINT = "install the 'vertex' extra: pip install 'chatledger[vertex]'"


def _true(value: str | None) -> bool | None:
    return None if value is None else value.lower() in ("true", "1")


def _google_auth() -> Any:
    """``google.auth``, or an error naming the extra that provides it."""
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError as exc:
        raise InvalidInputError(
            f"Vertex AI with Google Cloud credentials needs google-auth ({exc.name} is not "
            f"installed): {_EXTRA_HINT}, or use express mode (an API key with vertexai=True)"
        ) from None
    return google.auth


def load_default_credentials(project: str | None) -> tuple[Any, str]:
    """Application Default Credentials and their project, as google-genai's
    ``load_auth`` finds them (``google.auth.default`` with the cloud-platform scope).
    ``project`` wins over the credentials' project when given."""
    auth = _google_auth()
    try:
        credentials, found = auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except auth.exceptions.DefaultCredentialsError as exc:
        raise InvalidInputError(
            "no Google Cloud credentials for Vertex AI: pass Client(credentials=...), run "
            "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
            f"({exc})"
        ) from None
    register_credentials(credentials)
    project = project or found
    if not project:
        raise InvalidInputError(
            "Could not resolve project using application default credentials: pass "
            "Client(project=...) or set GOOGLE_CLOUD_PROJECT"
        )
    return credentials, project


@dataclasses.dataclass
class VertexSettings:
    """Where and how a client reaches Vertex AI, as :func:`resolve_vertex` decided.

    ``project`` and ``location`` name the resource (both None in express mode);
    ``api_key`` is the express-mode key (else None: an access token is sent);
    ``credentials`` a ``google.auth`` credentials object, or None until Application
    Default Credentials are loaded at the first request; ``base_url`` where requests go;
    ``api_version`` the path's version (``v1beta1`` by default).
    """

    project: str | None
    location: str | None
    api_key: str | None
    credentials: Any
    base_url: str
    api_version: str

    def __repr__(self) -> str:
        # Never the key or the credentials' token.
        return (
            f"VertexSettings(project={self.project!r}, location={self.location!r}, "
            f"express={self.api_key is not None}, base_url={self.base_url!r}, "
            f"api_version={self.api_version!r})"
        )


def resolve_vertex(
    *,
    vertexai: bool | None,
    api_key: str | None,
    credentials: Any,
    project: str | None,
    location: str | None,
    http_options: HttpOptions | None,
) -> VertexSettings | None:
    """Whether a client uses Vertex AI and how (None: the Gemini Developer API).

    The precedence is google-genai 3.3.0's (docs/chat-api.md, "Vertex AI"):
    ``vertexai`` when given, else ``GOOGLE_GENAI_USE_ENTERPRISE``, else
    ``GOOGLE_GENAI_USE_VERTEXAI`` (``true`` or ``1``). Explicit arguments win over the
    environment (``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_CLOUD_LOCATION``, ``GOOGLE_API_KEY``
    then ``GEMINI_API_KEY``); from the environment alone, a project or location wins
    over an API key. Without a location nor a key the location is ``global``; without a
    project nor a key, Application Default Credentials give the project.
    """
    if vertexai is None:
        env_enterprise = _true(os.environ.get("GOOGLE_GENAI_USE_ENTERPRISE"))
        env_vertexai = _true(os.environ.get("GOOGLE_GENAI_USE_VERTEXAI"))
        if None not in (env_enterprise, env_vertexai) and env_enterprise != env_vertexai:
            logger.warning(
                "GOOGLE_GENAI_USE_ENTERPRISE and GOOGLE_GENAI_USE_VERTEXAI are set with "
                "conflicting values; GOOGLE_GENAI_USE_ENTERPRISE is used"
            )
        vertexai = env_enterprise if env_enterprise is not None else env_vertexai
    if (project or location) and not vertexai:
        raise InvalidInputError(
            "the Gemini API does not support project/location: pass vertexai=True (or set "
            "GOOGLE_GENAI_USE_VERTEXAI=true) to use Vertex AI"
        )
    if credentials is not None and api_key:
        raise InvalidInputError(
            "credentials and an API key are mutually exclusive: pass one of them"
        )
    if not vertexai:
        return None
    if credentials is not None and not all(
        hasattr(credentials, name) for name in ("token", "expired", "refresh")
    ):
        raise InvalidInputError(
            f"credentials must be google.auth credentials (with token, expired and refresh), "
            f"not {type(credentials).__name__}: for example google.oauth2.service_account."
            "Credentials.from_service_account_file(...), or leave them out to use "
            "Application Default Credentials"
        )
    for name, value in (("project", project), ("location", location)):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(
                f"the Vertex AI {name} must be a string, not {type(value).__name__}"
            )
    custom_base_url = (
        http_options.base_url if http_options is not None and http_options.base_url else None
    ) or os.environ.get("GOOGLE_VERTEX_BASE_URL")

    env_project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    env_location = os.environ.get("GOOGLE_CLOUD_LOCATION")
    env_api_key = os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY") or None
    chosen_project = project or env_project
    chosen_location = location or env_location
    chosen_key = api_key or env_api_key

    # Which of the explicit and implicit settings wins (google-genai's order): explicit
    # credentials over an implicit key, an explicit key over an implicit project or
    # location, an explicit project or location over an implicit key, and from the
    # environment alone, a project or location over a key.
    if api_key and not credentials and not project and not location:
        if env_project or env_location:
            chosen_project = chosen_location = None
    elif (
        not api_key
        and env_api_key
        and (credentials is not None or project or location or env_project or env_location)
    ):
        chosen_key = None

    for name, value in (("project", chosen_project), ("location", chosen_location)):
        if value and not _is_resource_id(value):
            raise InvalidInputError(
                f"invalid Vertex AI {name} {value!r} (from the argument or GOOGLE_CLOUD_"
                f"{name.upper()}): letters, digits, '-', '_', '.' and ':' only (for example "
                "my-project, us-central1)"
            )

    if (
        not chosen_location
        and not chosen_key
        and (not custom_base_url or custom_base_url.endswith(".googleapis.com"))
    ):
        chosen_location = "global"
    if not chosen_project and not chosen_key and not custom_base_url:
        loaded, chosen_project = load_default_credentials(None)
        if credentials is None:
            credentials = loaded

    if not ((chosen_project and chosen_location) or chosen_key):
        raise InvalidInputError(
            "Project or API key must be set when using the Vertex AI API: pass "
            "Client(vertexai=True, project=..., location=...) or an API key (express mode), "
            "or set GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION"
        )
    if chosen_key and chosen_location and not chosen_project:
        raise InvalidInputError(
            "Vertex AI express mode (an API key) takes no location without a project: "
            "drop the location, or give a project and credentials instead of the key"
        )

    if custom_base_url:
        if not custom_base_url.endswith(".googleapis.com") and not (
            (project and location) or api_key
        ):
            # google-genai then posts to the base URL itself (an API gateway that
            # authenticates by its own headers); chatledger does not speak to gateways.
            raise InvalidInputError(
                "with a base_url, Vertex AI needs project= and location= (or api_key=) "
                "passed to Client: chatledger does not send to an API gateway's bare URL"
            )
        base_url = custom_base_url
    elif (chosen_key and not chosen_location) or chosen_location == "global":
        base_url = "https://aiplatform.googleapis.com/"
    elif chosen_location in _MULTI_REGIONAL_LOCATIONS:
        base_url = f"https://aiplatform.{chosen_location}.rep.googleapis.com/"
    else:
        base_url = f"https://{chosen_location}-aiplatform.googleapis.com/"

    env_version = os.environ.get("GOOGLE_GENAI_API_VERSION")
    api_version = (
        http_options.api_version if http_options is not None and http_options.api_version else None
    ) or (DEFAULT_VERTEX_API_VERSION if not env_version or env_version == "beta" else env_version)
    if chosen_key:
        chosen_key = chosen_key.strip()
        register_secret(chosen_key)
    elif chosen_project or chosen_location:
        # An access token will be needed: say now, not at the first send, if google-auth
        # (and the requests transport its refresh uses) is missing.
        _google_auth()
    if credentials is not None:
        register_credentials(credentials)
    return VertexSettings(
        project=chosen_project,
        location=chosen_location,
        api_key=chosen_key or None,
        credentials=credentials,
        base_url=base_url,
        api_version=api_version,
    )


# Config fields only Vertex AI has, and where google-genai 3.3.0 puts them in the body:
# kept by chatledger's config as given (unknown fields), moved here as
# ``_GenerateContentConfig_to_vertex`` moves them.
_VERTEX_GENERATION_FIELDS: dict[str, str] = {
    "routing_config": "routingConfig",
    "routingConfig": "routingConfig",
    "model_selection_config": "modelConfig",
    "modelSelectionConfig": "modelConfig",
    "audio_timestamp": "audioTimestamp",
    "audioTimestamp": "audioTimestamp",
}
_VERTEX_TOP_LEVEL_FIELDS: dict[str, str] = {
    "model_armor_config": "modelArmorConfig",
    "modelArmorConfig": "modelArmorConfig",
    "generation_output_config": "outputConfig",
    "generationOutputConfig": "outputConfig",
}
#: Config fields the Gemini Developer API has and Vertex AI refuses (google-genai raises).
DEVELOPER_API_ONLY_FIELDS = frozenset(
    {"store", "enable_enhanced_civic_answers", "enableEnhancedCivicAnswers"}
)


def check_vertex_config(config: dict[str, Any] | None) -> None:
    """Refuse a (wire) config holding a field Vertex AI does not support, as
    google-genai 3.3.0 does, before anything is recorded."""
    found = sorted(DEVELOPER_API_ONLY_FIELDS.intersection(config or {}))
    if found:
        raise InvalidInputError(
            f"{found[0]} is only supported by the Gemini Developer API, not by Vertex AI: "
            "remove it from the config, or make the client without vertexai=True"
        )


def vertex_body(body: dict[str, Any]) -> dict[str, Any]:
    """A Gemini API request body with Vertex AI's own config fields where Vertex AI
    (and google-genai) put them (``model_selection_config`` as
    ``generationConfig.modelConfig``, ``model_armor_config`` and
    ``generation_output_config`` at the top level as ``modelArmorConfig`` and
    ``outputConfig``)."""
    generation = body.get("generationConfig")
    if not isinstance(generation, dict):
        return body
    check_vertex_config(generation)
    if not any(k in _VERTEX_GENERATION_FIELDS or k in _VERTEX_TOP_LEVEL_FIELDS for k in generation):
        return body
    moved: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for key, value in generation.items():
        if key in _VERTEX_TOP_LEVEL_FIELDS:
            moved[_VERTEX_TOP_LEVEL_FIELDS[key]] = value
        else:
            kept[_VERTEX_GENERATION_FIELDS.get(key) or key] = value
    result = {**body, **moved}
    if kept:
        result["generationConfig"] = kept
    else:
        del result["generationConfig"]
    return result


def _is_resource_id(value: str) -> bool:
    return (
        bool(value)
        and len(value) <= 128
        and all(c.isascii() and (c.isalnum() or c in "-_.:") for c in value)
    )


def vertex_model_path(model: str) -> str:
    """The resource path of ``model`` on Vertex AI, as google-genai's ``t_model`` makes
    it: ``gemini-x`` is ``publishers/google/models/gemini-x``, ``pub/m`` is
    ``publishers/pub/models/m``; ``projects/...``, ``models/...`` and
    ``publishers/...`` are kept."""
    check_model_name(model)
    if model.startswith(("projects/", "models/", "publishers/")):
        return model
    if "/" in model:
        publisher, model_id = model.split("/", 1)
        return f"publishers/{publisher}/models/{model_id}"
    return f"publishers/google/models/{model}"


class VertexTransport(GeminiTransport):
    """Gemini on Vertex AI (``Client(vertexai=True, ...)``), see the module docstring.

    The body is the Gemini API's; the URL, the version (``v1beta1``) and the
    credentials are Vertex AI's. With Google Cloud credentials, an access token is
    fetched (Application Default Credentials when none were given) and refreshed when
    it has expired, before a request is sent; a token that cannot be had fails the call
    (:class:`~chatledger.errors.ModelConnectionError`, recorded like any failed call).
    """

    name = "vertex"
    endpoint_kind = "vertex"

    def __init__(self, settings: VertexSettings, http_options: HttpOptions | None = None) -> None:
        self.vertex = settings
        options = (http_options or HttpOptions()).model_copy(
            update={"base_url": settings.base_url, "api_version": settings.api_version}
        )
        self._credentials = settings.credentials
        self._auth_lock = threading.Lock()
        super().__init__(settings.api_key, options)

    def __repr__(self) -> str:
        return (
            f"VertexTransport(base_url={self.endpoint.shown!r}, "
            f"project={self.vertex.project!r}, location={self.vertex.location!r})"
        )

    @property
    def uses_token(self) -> bool:
        """Whether requests carry an access token (else the express-mode API key)."""
        return bool(self.vertex.project or self.vertex.location) and not self._api_key

    def request_body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        return vertex_body(request.body())

    def url(self, model: str, method: str) -> str:
        path = vertex_model_path(model)
        if not path.startswith("projects/") and (self.vertex.project or self.vertex.location):
            path = f"projects/{self.vertex.project}/locations/{self.vertex.location}/{path}"
        return f"{self.base_url}{self.api_version}/{quote(path, safe='/:')}:{method}"

    # ----------------------------------------------------------------- credentials

    def access_token(self) -> str:
        """A valid access token: the credentials' own, refreshed when expired (loading
        Application Default Credentials first when none were given). Registered as a
        secret before it is returned."""
        with self._auth_lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = load_default_credentials(self.vertex.project)
                credentials = self._credentials
                if credentials.expired or not credentials.token:
                    auth = _google_auth()
                    credentials.refresh(auth.transport.requests.Request())
            except ChatledgerError:
                raise
            except Exception as exc:
                # google-auth's errors may quote a token endpoint's answer: masked, and
                # only its type and message kept.
                register_credentials(self._credentials)
                raise ModelConnectionError(
                    f"could not get a Vertex AI access token ({type(exc).__name__}: {exc}); "
                    "check the credentials (gcloud auth application-default login)"
                ) from None
            register_credentials(credentials)
            token = credentials.token
            if not isinstance(token, str) or not token:
                raise ModelConnectionError(
                    "Could not resolve API token from the environment: the credentials "
                    "gave no access token"
                )
            return token

    def key_headers(self) -> dict[str, str]:
        if not self.uses_token:
            return {"x-goog-api-key": self._api_key} if self._api_key else {}
        headers = {"Authorization": f"Bearer {self.access_token()}"}
        quota_project = getattr(self._credentials, "quota_project_id", None)
        if isinstance(quota_project, str) and quota_project:
            headers["x-goog-user-project"] = quota_project
        return headers

    def headers(self, *, stream: bool) -> dict[str, str]:
        """google-genai's headers: JSON in, its telemetry headers (naming chatledger
        and Python), ``X-Server-Timeout`` when there is a timeout, the credentials and
        ``http_options.headers`` in google-genai's order. No ``Accept`` (httpx sends
        ``*/*``, as for google-genai)."""
        python = "gl-python/" + sys.version.split()[0]
        headers = {
            "Content-Type": "application/json",
            "user-agent": f"chatledger/{__version__} {python}",
            "x-goog-api-client": f"chatledger/{__version__} {python}",
        }
        if self._options.timeout:
            headers["X-Server-Timeout"] = str(math.ceil(self._options.timeout / 1000))
        if self.endpoint.basic_auth:
            headers["Authorization"] = self.endpoint.basic_auth
        if self.uses_token:
            # As google-genai: the token is set last, over any Authorization header given.
            headers.update(self._options.headers or {})
            headers.update(self.key_headers())
        else:
            # As google-genai: http_options.headers may replace the express-mode key header.
            headers.update(self.key_headers())
            headers.update(self._options.headers or {})
        return headers

    # ----------------------------------------------------------------- async

    async def _afresh_token(self) -> None:
        # A refresh is blocking I/O (google-auth's requests transport): off the loop.
        if self.uses_token and (
            self._credentials is None or self._credentials.expired or not self._credentials.token
        ):
            await asyncio.to_thread(self.access_token)

    async def agenerate(self, request: ModelRequest) -> dict[str, Any]:
        await self._afresh_token()
        return await super().agenerate(request)

    async def astream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        await self._afresh_token()
        chunks = super().astream(request)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk
