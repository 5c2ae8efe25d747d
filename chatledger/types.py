"""The API types: pydantic models named and shaped like google-genai's.

Attributes are snake_case in Python and camelCase on the wire. Every model keeps fields
it does not know (a server's newer part field, ``thoughtSignature`` on an older model,
...) exactly as they arrived, and writes them back unchanged, so nothing the server says
is dropped between a response and the next request.

Dicts (snake_case or camelCase keys) are accepted wherever a model is, and so are
google-genai's own objects, which are converted through their ``model_dump``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import pydantic
from pydantic import ConfigDict, Field, alias_generators

from .errors import mask_url_password

__all__ = [
    "AutomaticFunctionCallingConfig",
    "Blob",
    "BlockedReason",
    "Candidate",
    "CodeExecutionResult",
    "Content",
    "ContentListUnion",
    "ContentListUnionDict",
    "ContentOrDict",
    "ContentUnion",
    "ContentUnionDict",
    "ExecutableCode",
    "File",
    "FileData",
    "FinishReason",
    "FunctionCall",
    "FunctionCallingConfig",
    "FunctionCallingConfigMode",
    "FunctionDeclaration",
    "FunctionResponse",
    "GenerateContentConfig",
    "GenerateContentConfigOrDict",
    "GenerateContentResponse",
    "GenerateContentResponsePromptFeedback",
    "GenerateContentResponseUsageMetadata",
    "HarmBlockThreshold",
    "HarmCategory",
    "HarmProbability",
    "HttpOptions",
    "HttpOptionsOrDict",
    "HttpRetryOptions",
    "ModalityTokenCount",
    "ModelContent",
    "Part",
    "PartUnion",
    "PartUnionDict",
    "SafetyRating",
    "SafetySetting",
    "Schema",
    "ThinkingConfig",
    "Tool",
    "ToolConfig",
    "ToolListUnion",
    "Type",
    "UserContent",
    "VideoMetadata",
]

logger = logging.getLogger("chatledger.types")

#: The largest continuation token a response may carry (docs/chat-api.md#continuation).
MAX_CONTINUATION_TOKEN_BYTES = 64 * 1024


# --------------------------------------------------------------------------- base


def _decode_base64(value: Any) -> Any:
    """Bytes fields take bytes as they are, and text as base64 (standard or URL-safe)."""
    if isinstance(value, str):
        padded = value + "=" * (-len(value) % 4)
        try:
            if "-" in value or "_" in value:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("expected bytes or base64 text") from exc
    return value


def _encode_base64(value: bytes) -> str:
    # google-genai writes bytes URL-safe; we do the same so requests match byte for byte.
    return base64.urlsafe_b64encode(value).decode("ascii")


Base64Bytes: TypeAlias = Annotated[
    bytes,
    pydantic.BeforeValidator(_decode_base64),
    pydantic.PlainSerializer(_encode_base64, return_type=str, when_used="json"),
]


class _BaseModel(pydantic.BaseModel):
    """Shared options: camelCase aliases, unknown fields kept, foreign objects accepted."""

    model_config = ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="allow",
        arbitrary_types_allowed=True,
        protected_namespaces=(),
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_foreign_models(cls, data: Any) -> Any:
        # google-genai's objects (or any other pydantic model of the same shape): take
        # their wire form, which our aliases read back without loss.
        if isinstance(data, pydantic.BaseModel) and not isinstance(data, _BaseModel):
            return data.model_dump(by_alias=True, exclude_none=True)
        return data

    def __repr_args__(self) -> Any:
        # Show what is set; a Part has a dozen fields and usually one value.
        return [(name, value) for name, value in super().__repr_args__() if value is not None]

    def to_wire(self) -> dict[str, Any]:
        """This object as JSON-ready camelCase data, without unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Any:
        """Build from wire data (camelCase, base64 bytes)."""
        return cls.model_validate(data)


class _CaseInsensitiveEnum(str, enum.Enum):
    """A string enum that accepts any case and keeps values it does not know.

    A server may add an enum value (a new finish reason, say) before this library knows
    it; such values become pseudo-members so that the response is still read and stored.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        for member in cls:
            if member.value.upper() == value.upper():
                return member
        pseudo = str.__new__(cls, value)
        pseudo._name_ = value
        pseudo._value_ = value
        return pseudo


# --------------------------------------------------------------------------- enums


class Type(_CaseInsensitiveEnum):
    TYPE_UNSPECIFIED = "TYPE_UNSPECIFIED"
    STRING = "STRING"
    NUMBER = "NUMBER"
    INTEGER = "INTEGER"
    BOOLEAN = "BOOLEAN"
    ARRAY = "ARRAY"
    OBJECT = "OBJECT"
    NULL = "NULL"


class HarmCategory(_CaseInsensitiveEnum):
    HARM_CATEGORY_UNSPECIFIED = "HARM_CATEGORY_UNSPECIFIED"
    HARM_CATEGORY_HARASSMENT = "HARM_CATEGORY_HARASSMENT"
    HARM_CATEGORY_HATE_SPEECH = "HARM_CATEGORY_HATE_SPEECH"
    HARM_CATEGORY_SEXUALLY_EXPLICIT = "HARM_CATEGORY_SEXUALLY_EXPLICIT"
    HARM_CATEGORY_DANGEROUS_CONTENT = "HARM_CATEGORY_DANGEROUS_CONTENT"
    HARM_CATEGORY_CIVIC_INTEGRITY = "HARM_CATEGORY_CIVIC_INTEGRITY"


class HarmBlockThreshold(_CaseInsensitiveEnum):
    HARM_BLOCK_THRESHOLD_UNSPECIFIED = "HARM_BLOCK_THRESHOLD_UNSPECIFIED"
    BLOCK_LOW_AND_ABOVE = "BLOCK_LOW_AND_ABOVE"
    BLOCK_MEDIUM_AND_ABOVE = "BLOCK_MEDIUM_AND_ABOVE"
    BLOCK_ONLY_HIGH = "BLOCK_ONLY_HIGH"
    BLOCK_NONE = "BLOCK_NONE"
    OFF = "OFF"


class HarmProbability(_CaseInsensitiveEnum):
    HARM_PROBABILITY_UNSPECIFIED = "HARM_PROBABILITY_UNSPECIFIED"
    NEGLIGIBLE = "NEGLIGIBLE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class BlockedReason(_CaseInsensitiveEnum):
    BLOCKED_REASON_UNSPECIFIED = "BLOCKED_REASON_UNSPECIFIED"
    SAFETY = "SAFETY"
    OTHER = "OTHER"
    BLOCKLIST = "BLOCKLIST"
    PROHIBITED_CONTENT = "PROHIBITED_CONTENT"
    IMAGE_SAFETY = "IMAGE_SAFETY"


class FinishReason(_CaseInsensitiveEnum):
    FINISH_REASON_UNSPECIFIED = "FINISH_REASON_UNSPECIFIED"
    STOP = "STOP"
    MAX_TOKENS = "MAX_TOKENS"
    SAFETY = "SAFETY"
    RECITATION = "RECITATION"
    LANGUAGE = "LANGUAGE"
    OTHER = "OTHER"
    BLOCKLIST = "BLOCKLIST"
    PROHIBITED_CONTENT = "PROHIBITED_CONTENT"
    SPII = "SPII"
    MALFORMED_FUNCTION_CALL = "MALFORMED_FUNCTION_CALL"
    IMAGE_SAFETY = "IMAGE_SAFETY"
    UNEXPECTED_TOOL_CALL = "UNEXPECTED_TOOL_CALL"
    #: The model paused a long answer: the next request carries ``continuation_token``
    #: (docs/chat-api.md#continuation).
    CONTINUATION = "CONTINUATION"


class FunctionCallingConfigMode(_CaseInsensitiveEnum):
    MODE_UNSPECIFIED = "MODE_UNSPECIFIED"
    AUTO = "AUTO"
    ANY = "ANY"
    NONE = "NONE"
    VALIDATED = "VALIDATED"


# --------------------------------------------------------------------------- content


class Blob(_BaseModel):
    """Inline bytes with their MIME type."""

    data: Base64Bytes | None = None
    mime_type: str | None = None
    display_name: str | None = None


class FileData(_BaseModel):
    """A reference to a file by URI."""

    file_uri: str | None = None
    mime_type: str | None = None
    display_name: str | None = None


class File(_BaseModel):
    """An uploaded file; as a message it becomes a ``file_data`` part."""

    name: str | None = None
    uri: str | None = None
    mime_type: str | None = None
    display_name: str | None = None


class FunctionCall(_BaseModel):
    id: str | None = None
    name: str | None = None
    args: dict[str, Any] | None = None


class FunctionResponse(_BaseModel):
    id: str | None = None
    name: str | None = None
    response: dict[str, Any] | None = None
    will_continue: bool | None = None


class ExecutableCode(_BaseModel):
    code: str | None = None
    language: str | None = None


class CodeExecutionResult(_BaseModel):
    outcome: str | None = None
    output: str | None = None


class VideoMetadata(_BaseModel):
    start_offset: str | None = None
    end_offset: str | None = None
    fps: float | None = None


class Part(_BaseModel):
    """One piece of a content: text, data, a file, a function call or response, ..."""

    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    executable_code: ExecutableCode | None = None
    code_execution_result: CodeExecutionResult | None = None
    thought: bool | None = None
    thought_signature: Base64Bytes | None = None
    video_metadata: VideoMetadata | None = None

    @classmethod
    def from_text(cls, *, text: str) -> Part:
        return cls(text=text)

    @classmethod
    def from_uri(cls, *, file_uri: str, mime_type: str | None = None) -> Part:
        return cls(file_data=FileData(file_uri=file_uri, mime_type=mime_type))

    @classmethod
    def from_bytes(cls, *, data: bytes, mime_type: str) -> Part:
        return cls(inline_data=Blob(data=data, mime_type=mime_type))

    @classmethod
    def from_function_call(cls, *, name: str, args: dict[str, Any]) -> Part:
        return cls(function_call=FunctionCall(name=name, args=args))

    @classmethod
    def from_function_response(
        cls, *, name: str, response: dict[str, Any], id: str | None = None
    ) -> Part:
        return cls(function_response=FunctionResponse(name=name, response=response, id=id))

    @classmethod
    def from_executable_code(cls, *, code: str, language: str) -> Part:
        return cls(executable_code=ExecutableCode(code=code, language=language))

    @classmethod
    def from_code_execution_result(cls, *, outcome: str, output: str) -> Part:
        return cls(code_execution_result=CodeExecutionResult(outcome=outcome, output=output))


class Content(_BaseModel):
    """A turn's contents: a role (``user`` or ``model``) and its parts."""

    parts: list[Part] | None = None
    role: str | None = None


class UserContent(Content):
    """A content with ``role='user'``; parts may be given as strings or Parts."""

    role: Literal["user"] = "user"

    def __init__(self, parts: Any = None, **data: Any) -> None:
        if parts is not None and not isinstance(parts, list):
            parts = [parts]
        if parts is not None:
            parts = [Part(text=p) if isinstance(p, str) else p for p in parts]
        super().__init__(parts=parts, **data)


class ModelContent(Content):
    """A content with ``role='model'``; parts may be given as strings or Parts."""

    role: Literal["model"] = "model"

    def __init__(self, parts: Any = None, **data: Any) -> None:
        if parts is not None and not isinstance(parts, list):
            parts = [parts]
        if parts is not None:
            parts = [Part(text=p) if isinstance(p, str) else p for p in parts]
        super().__init__(parts=parts, **data)


# --------------------------------------------------------------------------- config


class Schema(_BaseModel):
    """The OpenAPI subset Gemini uses to describe function parameters and responses."""

    type: Type | None = None
    format: str | None = None
    title: str | None = None
    description: str | None = None
    nullable: bool | None = None
    enum: list[str] | None = None
    items: Schema | None = None
    properties: dict[str, Schema] | None = None
    required: list[str] | None = None
    any_of: list[Schema] | None = None
    default: Any = None
    example: Any = None
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = None
    max_items: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    property_ordering: list[str] | None = None


class FunctionDeclaration(_BaseModel):
    """A function the model may call. Declarations are never called by chatledger."""

    name: str | None = None
    description: str | None = None
    parameters: Schema | None = None
    parameters_json_schema: Any = None
    response: Schema | None = None
    response_json_schema: Any = None
    behavior: str | None = None


class Tool(_BaseModel):
    function_declarations: list[FunctionDeclaration] | None = None
    code_execution: dict[str, Any] | None = None
    google_search: dict[str, Any] | None = None
    url_context: dict[str, Any] | None = None


class FunctionCallingConfig(_BaseModel):
    mode: FunctionCallingConfigMode | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(_BaseModel):
    function_calling_config: FunctionCallingConfig | None = None


class SafetySetting(_BaseModel):
    category: HarmCategory | None = None
    threshold: HarmBlockThreshold | None = None
    method: str | None = None


class ThinkingConfig(_BaseModel):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None


class AutomaticFunctionCallingConfig(_BaseModel):
    """How Python functions in ``config.tools`` are called (docs/chat-api.md#function-calling)."""

    disable: bool | None = None
    maximum_remote_calls: int | None = Field(default=10)
    ignore_call_history: bool | None = None


class HttpRetryOptions(_BaseModel):
    """Retries for 429, 5xx and connection errors: exponential backoff with jitter."""

    attempts: int | None = None
    initial_delay: float | None = None
    max_delay: float | None = None
    exp_base: float | None = None
    jitter: float | None = None
    http_status_codes: list[int] | None = None


class HttpOptions(_BaseModel):
    """Where and how to reach the model server.

    ``timeout`` (milliseconds) is the budget of each whole request, as google-genai
    documents it: connecting, waiting and reading the entire answer, every chunk of a
    stream included. A request still running when it is spent ends with
    :class:`~chatledger.errors.ModelTimeoutError` (retried like any timeout when
    ``retry_options`` are given, each attempt with the whole budget). Without it a
    request may take as long as the server does; connecting is limited to 30 s.

    ``max_response_bytes`` (chatledger's own; default 64 MiB) bounds one answer: a whole
    body, or every byte of a stream together. A larger answer is refused as it arrives,
    with :class:`~chatledger.errors.InvalidResponseError`, recorded as a failed call.
    """

    base_url: str | None = None
    api_version: str | None = None
    headers: dict[str, str] | None = None
    timeout: int | None = None
    retry_options: HttpRetryOptions | None = None
    max_response_bytes: int | None = None

    def __repr__(self) -> str:
        # Headers may carry credentials, and so may the base URL: never show them.
        shown = {k: "***" for k in (self.headers or {})}
        return (
            f"HttpOptions(base_url={mask_url_password(self.base_url)!r}, "
            f"api_version={self.api_version!r}, headers={shown!r}, timeout={self.timeout!r})"
        )

    __str__ = __repr__


ToolLike: TypeAlias = Tool | Callable[..., Any]


class GenerateContentConfig(_BaseModel):
    """Options for a request; a chat's config, merged with a per-message config."""

    http_options: HttpOptions | None = None
    system_instruction: Content | str | Part | list[str | Part] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None
    candidate_count: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    response_logprobs: bool | None = None
    logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: Any = None
    response_json_schema: Any = None
    safety_settings: list[SafetySetting] | None = None
    tools: list[Any] | None = None
    tool_config: ToolConfig | None = None
    labels: dict[str, str] | None = None
    cached_content: str | None = None
    response_modalities: list[str] | None = None
    media_resolution: str | None = None
    speech_config: Any = None
    thinking_config: ThinkingConfig | None = None
    automatic_function_calling: AutomaticFunctionCallingConfig | None = None
    #: Follow ``CONTINUATION`` finish reasons with further requests (default: on); a
    #: client-side setting, never sent (docs/chat-api.md#continuation).
    automatic_continuation: bool | None = None
    #: Resume a paused answer: sent as the request's ``continuationToken``.
    continuation_token: Base64Bytes | None = None

    @pydantic.field_validator("tools", mode="before")
    @classmethod
    def _check_tools(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            raise ValueError("tools must be a list of Tool objects or Python functions")
        checked: list[Any] = []
        for tool in value:
            if (callable(tool) and not isinstance(tool, pydantic.BaseModel | dict)) or isinstance(
                tool, Tool
            ):
                checked.append(tool)
            else:
                checked.append(Tool.model_validate(tool))
        return checked


# --------------------------------------------------------------------------- response


class SafetyRating(_BaseModel):
    category: HarmCategory | None = None
    probability: HarmProbability | None = None
    blocked: bool | None = None


class Candidate(_BaseModel):
    content: Content | None = None
    finish_reason: FinishReason | None = None
    finish_message: str | None = None
    safety_ratings: list[SafetyRating] | None = None
    citation_metadata: dict[str, Any] | None = None
    grounding_metadata: dict[str, Any] | None = None
    logprobs_result: dict[str, Any] | None = None
    token_count: int | None = None
    index: int | None = None
    avg_logprobs: float | None = None
    #: Set with ``finish_reason == CONTINUATION``: the token that resumes the answer.
    continuation_token: Base64Bytes | None = None

    @pydantic.field_validator("continuation_token")
    @classmethod
    def _bound_token(cls, value: bytes | None) -> bytes | None:
        # A token is sent back and recorded with every hop: a server's huge one is refused.
        if value is not None and len(value) > MAX_CONTINUATION_TOKEN_BYTES:
            raise ValueError(
                f"continuation_token is {len(value)} bytes, more than "
                f"{MAX_CONTINUATION_TOKEN_BYTES}: not a token chatledger sends back"
            )
        return value


class GenerateContentResponsePromptFeedback(_BaseModel):
    block_reason: BlockedReason | None = None
    block_reason_message: str | None = None
    safety_ratings: list[SafetyRating] | None = None


class ModalityTokenCount(_BaseModel):
    """Tokens of one modality (``TEXT``, ``IMAGE``, ...)."""

    modality: str | None = None
    token_count: int | None = None


def _token_details(value: Any) -> Any:
    # Kept as wire dicts (camelCase), as the server sends them, whichever case was given.
    if isinstance(value, list):
        return [
            ModalityTokenCount.model_validate(item).to_wire()
            if isinstance(item, dict | ModalityTokenCount)
            else item
            for item in value
        ]
    return value


TokenDetails: TypeAlias = Annotated[
    list[dict[str, Any]] | None, pydantic.BeforeValidator(_token_details)
]


class GenerateContentResponseUsageMetadata(_BaseModel):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    total_token_count: int | None = None
    cached_content_token_count: int | None = None
    thoughts_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    prompt_tokens_details: TokenDetails = None
    cache_tokens_details: TokenDetails = None
    candidates_tokens_details: TokenDetails = None
    tool_use_prompt_tokens_details: TokenDetails = None
    traffic_type: str | None = None
    _initial_prompt_token_count: int | None = pydantic.PrivateAttr(default=None)

    @property
    def initial_prompt_token_count(self) -> int | None:
        """The prompt tokens of the first request, before any continuation hop
        (docs/chat-api.md#continuation); ``prompt_token_count`` sums every hop's."""
        if self._initial_prompt_token_count is not None:
            return self._initial_prompt_token_count
        return self.prompt_token_count


class GenerateContentResponse(_BaseModel):
    """A model response, or one chunk of a streamed response."""

    candidates: list[Candidate] | None = None
    prompt_feedback: GenerateContentResponsePromptFeedback | None = None
    usage_metadata: GenerateContentResponseUsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None
    create_time: str | None = None
    automatic_function_calling_history: list[Content] | None = None
    #: The text read with the config's ``response_schema`` / ``response_json_schema``
    #: (docs/chat-api.md#parsed): a pydantic object, a list, an Enum member, or JSON
    #: data; None when there is no schema or the text does not fit it.
    parsed: Any = Field(default=None, exclude=True)

    @property
    def initial_prompt_token_count(self) -> int | None:
        """The prompt tokens of the first request of a continued answer."""
        if self.usage_metadata is None:
            return None
        return self.usage_metadata.initial_prompt_token_count

    @property
    def parts(self) -> list[Part] | None:
        """The parts of the first candidate, or None."""
        if not self.candidates or self.candidates[0].content is None:
            return None
        return self.candidates[0].content.parts

    @property
    def text(self) -> str | None:
        """The text of the first candidate's parts, thoughts left out; None if it has none."""
        parts = self.parts
        if not parts:
            return None
        text = ""
        any_text = False
        for part in parts:
            if isinstance(part.text, str):
                if part.thought:
                    continue
                any_text = True
                text += part.text
        return text if any_text else None

    @property
    def function_calls(self) -> list[FunctionCall] | None:
        """The function calls in the first candidate, or None."""
        calls = [p.function_call for p in self.parts or [] if p.function_call is not None]
        return calls or None


# --------------------------------------------------------------------------- argument types

# The argument types of the chat API, named as google-genai 3.3.0 names them, so that code
# typed against google-genai type-checks against chatledger. What they accept is what
# google-genai accepts; google-genai's own objects (``google.genai.types.Part``, ...) are
# pydantic models of the same shape, read through their ``model_dump`` (hence
# ``pydantic.BaseModel`` in each union). The dict forms take snake_case or camelCase keys.

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
else:  # a runtime alias must not import Pillow (an optional extra)
    PILImage = object

#: One part of a message: text, a Part, an uploaded File, or a PIL image.
PartUnion: TypeAlias = str | Part | File | PILImage
#: A part, or its dict form (``send_message`` takes this or a list of it).
PartUnionDict: TypeAlias = PartUnion | dict[str, Any] | pydantic.BaseModel
#: A content: a Content, or the parts of a user content.
ContentUnion: TypeAlias = Content | PartUnion | list[PartUnion]
#: A content or its dict form, or the parts of a user content.
ContentUnionDict: TypeAlias = (
    Content | dict[str, Any] | PartUnionDict | list[PartUnionDict] | pydantic.BaseModel
)
#: One content or a list of them.
ContentListUnion: TypeAlias = ContentUnion | list[ContentUnion] | list[Content]
#: One content or a list of them, objects or dicts.
ContentListUnionDict: TypeAlias = (
    ContentUnionDict | list[ContentUnionDict] | list[Content] | list[dict[str, Any]]
)
#: A Content or its dict form (an item of ``history=``).
ContentOrDict: TypeAlias = Content | dict[str, Any] | pydantic.BaseModel
#: A GenerateContentConfig or its dict form (``config=``).
GenerateContentConfigOrDict: TypeAlias = GenerateContentConfig | dict[str, Any] | pydantic.BaseModel
#: HttpOptions or their dict form (``http_options=``).
HttpOptionsOrDict: TypeAlias = HttpOptions | dict[str, Any] | pydantic.BaseModel
#: The tools of a config: Tool objects, their dicts, or Python functions.
ToolListUnion: TypeAlias = list[Tool | dict[str, Any] | Callable[..., Any] | pydantic.BaseModel]


def is_python_function_tool(tool: Any) -> bool:
    """True for a Python callable given as a tool (called automatically)."""
    return callable(tool) and not isinstance(tool, pydantic.BaseModel | dict | type)


def is_async_function_tool(tool: Any) -> bool:
    return is_python_function_tool(tool) and (
        inspect.iscoroutinefunction(tool)
        or inspect.iscoroutinefunction(getattr(tool, "__call__", None))  # noqa: B004
    )


Schema.model_rebuild()
