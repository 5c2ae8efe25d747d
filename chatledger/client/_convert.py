"""Turns what callers pass (messages, histories, configs) into wire form, and back.

Everything chatledger stores and sends is wire form: the camelCase JSON of the Gemini
API. Conversion happens once, here, at the edge; bad input raises InvalidInputError
naming what was wrong before anything is sent or recorded. That includes values the log
could not store or hash consistently (see :func:`chatledger.events.envelope.check_json`):
lone surrogates, non-JSON objects, NaN, and nesting deeper than ``MAX_NESTING``. A model
response that breaks those rules is an InvalidResponseError; stored contents that do not
read back as API types (a hand-made or forged log) are an IntegrityError.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import pydantic

from .._gcpause import gc_paused
from ..errors import IntegrityError, InvalidInputError, InvalidResponseError
from ..events.envelope import MAX_NESTING, check_json
from ..projections.history import HistoryState, extract_context
from ..types import (
    Content,
    File,
    GenerateContentConfig,
    GenerateContentResponse,
    ModelContent,
    Part,
    Tool,
    UserContent,
    is_python_function_tool,
)
from ._schema import json_schema_to_wire, schema_to_wire

__all__ = [
    "config_to_wire",
    "content_from_wire",
    "contents_digest",
    "history_from_wire",
    "history_to_wire",
    "merge_configs",
    "message_to_content",
    "request_config",
    "stored_config",
]

WireContent = dict[str, Any]

# Config fields that belong at the top of a generateContent request; every other set
# field goes into ``generationConfig``. ``httpOptions``, ``automaticFunctionCalling`` and
# ``automaticContinuation`` are client-side and never sent.
_TOP_LEVEL = {
    "systemInstruction",
    "safetySettings",
    "tools",
    "toolConfig",
    "labels",
    "cachedContent",
    "serviceTier",
    "continuationToken",
}
_CLIENT_SIDE = {
    "httpOptions",
    "automaticFunctionCalling",
    "automaticContinuation",
    "shouldReturnHttpResponse",
}


# --------------------------------------------------------------------------- checks


def _check_values(value: Any, what: str) -> None:
    """Refuse, before pydantic sees them, values it would walk recursively or change
    silently when writing JSON: nesting deeper than MAX_NESTING (or a value containing
    itself), lone surrogates (pydantic writes U+FFFD for them in keys), and NaN or
    infinities (written as null). Other leaves are left to the validators."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (str, float)):
            check_json(item, what)
        elif isinstance(item, (dict, list, tuple, set, frozenset, pydantic.BaseModel)):
            if depth >= MAX_NESTING:
                raise InvalidInputError(
                    f"{what} is nested more than {MAX_NESTING} levels deep (or contains "
                    "itself); flatten it"
                )
            children: list[Any]
            if isinstance(item, dict):
                children = [*item.keys(), *item.values()]
            elif isinstance(item, pydantic.BaseModel):
                extra = item.__pydantic_extra__ or {}
                children = [*item.__dict__.values(), *extra.keys(), *extra.values()]
            else:
                children = list(item)
            stack.extend((child, depth + 1) for child in children)


def _to_wire(model: pydantic.BaseModel, what: str) -> dict[str, Any]:
    """``model.to_wire()``, checked to be JSON the log can store and to read back as the
    same type: a model changed by attribute assignment or ``model_construct`` is never
    validated by pydantic, and may hold anything."""
    _check_values(model, what)
    try:
        wire: dict[str, Any] = model.model_dump(
            mode="json", by_alias=True, exclude_none=True, warnings=False
        )
    except (ValueError, TypeError, RecursionError) as exc:
        # pydantic: a value it cannot serialize.
        raise InvalidInputError(f"{what} cannot be written as JSON: {exc}") from None
    check_json(wire, what)
    try:
        checked = type(model).model_validate(wire)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(f"{what} is not a valid {type(model).__name__}: {exc}") from None
    # The validated object's wire form: what the log then reads back is what was sent
    # (a None in an unknown field, say, is dropped from both).
    normal: dict[str, Any] = checked.model_dump(mode="json", by_alias=True, exclude_none=True)
    return normal


# --------------------------------------------------------------------------- messages


def _is_pil_image(value: Any) -> bool:
    module = type(value).__module__
    if not module.startswith("PIL."):
        return False
    try:
        import PIL.Image
    except ImportError:  # pragma: no cover - PIL objects imply PIL is installed
        return False
    return isinstance(value, PIL.Image.Image)


def _pil_to_part(image: Any) -> Part:
    # As google-genai: JPEG files stay JPEG, everything else becomes PNG.
    image_format = "PNG"
    params: dict[str, Any] = {}
    if (
        image.format == "JPEG"
        and getattr(image, "filename", "")
        and image.mode in ["1", "L", "RGB", "RGBX", "CMYK"]
    ):
        image_format = "JPEG"
        params["quality"] = "keep"
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return Part.from_bytes(data=buffer.getvalue(), mime_type=f"image/{image_format.lower()}")


def _is_file_like(value: Any) -> bool:
    return isinstance(value, File) or (
        type(value).__name__ == "File"
        and hasattr(value, "uri")
        and hasattr(value, "mime_type")
        and not isinstance(value, (str, bytes, dict))
    )


def _to_part(value: Any) -> Part:
    if isinstance(value, str):
        return Part(text=value)
    if isinstance(value, Part):
        return value
    if _is_file_like(value):
        uri, mime_type = getattr(value, "uri", None), getattr(value, "mime_type", None)
        if not uri or not mime_type:
            raise InvalidInputError("a File message needs both uri and mime_type")
        try:
            return Part.from_uri(file_uri=uri, mime_type=mime_type)
        except pydantic.ValidationError as exc:
            raise InvalidInputError(f"invalid File message: {exc}") from None
    if isinstance(value, pydantic.BaseModel) and type(value).__name__ == "Part":
        try:
            return Part.model_validate(value)  # a google-genai Part
        except pydantic.ValidationError as exc:
            raise InvalidInputError(f"invalid Part: {exc}") from None
    if _is_pil_image(value):
        return _pil_to_part(value)
    raise InvalidInputError(
        "Message must be a str, a Part, a File, a PIL image or a list of str and Part, "
        f"got {type(value)}"
    )


def message_to_content(message: Any) -> WireContent:
    """A ``send_message`` argument as one wire content.

    A single Part holding a function call becomes a model content (as google-genai);
    everything else a user content.
    """
    if isinstance(message, list):
        if not message:
            raise InvalidInputError("Message must not be an empty list")
        parts = [_to_part(item) for item in message]
        return {
            "role": "user",
            "parts": [_to_wire(p, f"message part {index}") for index, p in enumerate(parts)],
        }
    if isinstance(message, (dict, Content)) or (
        isinstance(message, pydantic.BaseModel) and type(message).__name__ == "Content"
    ):
        raise InvalidInputError(
            f"Message must be a str, a Part, a File, a PIL image or a list of them, got "
            f"{type(message)}; pass the content's parts instead"
        )
    part = _to_part(message)
    role = "model" if part.function_call is not None else "user"
    return {"role": role, "parts": [_to_wire(part, "message")]}


def history_to_wire(history: Iterable[Any] | None) -> list[WireContent]:
    """A ``history=`` argument as validated wire contents (roles user or model)."""
    if history is None:
        return []
    if isinstance(history, (str, bytes, dict)) or not isinstance(history, Iterable):
        raise InvalidInputError(
            f"history must be a list of Content objects or dicts, got {type(history).__name__}"
        )
    contents: list[WireContent] = []
    for index, item in enumerate(history):
        _check_values(item, f"history[{index}]")
        try:
            content = Content.model_validate(item)
        except pydantic.ValidationError as exc:
            raise InvalidInputError(f"history[{index}] is not a valid Content: {exc}") from None
        contents.append(_to_wire(content, f"history[{index}]"))
    try:
        extract_context(contents)  # the role check google-genai makes at creation
    except ValueError as exc:
        raise InvalidInputError(f"invalid history: {exc}") from None
    return contents


#: The part fields a text part can hold, with the one type each must have, for which
#: :func:`_built` makes the object pydantic would (see :func:`content_from_wire`).
_PLAIN_PART_FIELDS: dict[str, type] = {"text": str, "thought": bool}
_new = object.__new__
_set = object.__setattr__


def _defaults(cls: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in cls.model_fields.items()
    }


_PART_DEFAULTS = _defaults(Part)
_CONTENT_DEFAULTS = {cls: _defaults(cls) for cls in (Content, UserContent, ModelContent)}


def _built(cls: type[pydantic.BaseModel], defaults: dict[str, Any], values: dict[str, Any]) -> Any:
    """The object ``cls.model_validate(values)`` returns, for values already of their
    fields' types (no conversion to make): the same fields, fields set and (empty)
    extras, without running the validators again."""
    model = _new(cls)
    _set(model, "__dict__", {**defaults, **values})
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", {})
    _set(model, "__pydantic_private__", None)
    return model


def _plain_content(content: WireContent, cls: type[Content]) -> Content | None:
    """``content`` as ``cls`` without pydantic when it is the common shape chatledger
    writes and reads most (a role and text parts), else None (validate it instead).
    Contents in the log were validated when they were written; the shapes taken here
    are those whose validation converts nothing, so the object is the one
    ``model_validate`` makes (tests/test_typed_fast_path.py compares them)."""
    role = content.get("role")
    parts = content.get("parts")
    if len(content) != 2 or type(role) is not str or type(parts) is not list:
        return None
    if cls is not Content and role != ("user" if cls is UserContent else "model"):
        return None
    typed: list[Part] = []
    for part in parts:
        if type(part) is not dict or not part:
            return None
        if len(part) == 1 and type(part.get("text")) is str:  # the usual part
            model = _new(Part)
            values = _PART_DEFAULTS.copy()
            values["text"] = part["text"]
            _set(model, "__dict__", values)
            _set(model, "__pydantic_fields_set__", {"text"})
            _set(model, "__pydantic_extra__", {})
            _set(model, "__pydantic_private__", None)
            typed.append(model)
            continue
        for name, value in part.items():
            if type(value) is not _PLAIN_PART_FIELDS.get(name):
                return None
        typed.append(_built(Part, _PART_DEFAULTS, part))
    content_model = _new(cls)
    _set(content_model, "__dict__", {"parts": typed, "role": role})
    _set(content_model, "__pydantic_fields_set__", {"parts", "role"})
    _set(content_model, "__pydantic_extra__", {})
    _set(content_model, "__pydantic_private__", None)
    return content_model


def content_from_wire(content: WireContent, cls: type[Content] = Content) -> Content:
    """A wire content as a new Content object (callers get copies, never live state)."""
    if type(content) is dict:
        plain = _plain_content(content, cls)
        if plain is not None:
            return plain
    try:
        return cls.model_validate(content)
    except pydantic.ValidationError as exc:
        # Only a log written by something else than chatledger can hold such a content.
        raise IntegrityError(
            f"the log holds a content that is not a valid Content ({exc}); it was not "
            "written by chatledger: check where the log (or an imported file) came from"
        ) from None


#: The role a sent message's class holds (pydantic refuses any other).
_MESSAGE_ROLES: dict[type[Content], str] = {UserContent: "user", ModelContent: "model"}


def history_from_wire(history: HistoryState, which: str) -> list[Content]:
    """One of a history state's lists (``full``, ``context`` or ``curated``) as objects of
    the classes google-genai returns: the message a turn was sent with is a
    ``UserContent`` (a function call Part sent as a message: ``ModelContent``); model
    replies, function responses and the contents of a given history are ``Content``.

    The usual content (a role and one text part) is built here, as :func:`_plain_content`
    builds it, without a call per content: a history is mostly such contents.

    Python's cyclic garbage collector is paused while the objects are built (when it was
    running): they hold no reference cycle, so a collection during the build could free
    none of them, yet the thousands of objects a long history makes would start several
    (measured: two thirds of the build's time in a process holding 200,000 objects,
    docs/performance.md). Allocations then count towards the next collection as usual."""
    with gc_paused():
        return _history_from_wire(history, which)


def _history_from_wire(history: HistoryState, which: str) -> list[Content]:
    contents: list[WireContent] = getattr(history, which)
    full = history.full
    result: list[Content] = []
    append = result.append
    offset = full_offset = 0
    new, set_, defaults = _new, _set, _PART_DEFAULTS
    for span in history.turns:
        count: int = getattr(span, which)
        message = full[full_offset] if span.full and not span.loaded else None
        for index in range(offset, min(offset + count, len(contents))):
            content = contents[index]
            cls: type[Content] = Content
            if (
                index == offset
                and message is not None
                and (content is message or content == message)
            ):
                cls = ModelContent if content.get("role") == "model" else UserContent
            if type(content) is dict and len(content) == 2:
                parts = content.get("parts")
                role = content.get("role")
                if (
                    type(parts) is list
                    and len(parts) == 1
                    and type(role) is str
                    and (cls is Content or _MESSAGE_ROLES[cls] == role)
                ):
                    part = parts[0]
                    text = part.get("text") if type(part) is dict and len(part) == 1 else None
                    if type(text) is str:
                        typed_part = new(Part)
                        values = defaults.copy()
                        values["text"] = text
                        set_(typed_part, "__dict__", values)
                        set_(typed_part, "__pydantic_fields_set__", {"text"})
                        set_(typed_part, "__pydantic_extra__", {})
                        set_(typed_part, "__pydantic_private__", None)
                        typed = new(cls)
                        set_(typed, "__dict__", {"parts": [typed_part], "role": role})
                        set_(typed, "__pydantic_fields_set__", {"parts", "role"})
                        set_(typed, "__pydantic_extra__", {})
                        set_(typed, "__pydantic_private__", None)
                        append(typed)
                        continue
            append(content_from_wire(content, cls))
        offset += count
        full_offset += span.full
    # Never reached by a consistent state; kept so that no content is ever lost.
    result.extend(content_from_wire(content) for content in contents[offset:])
    return result


def response_from_wire(response: dict[str, Any]) -> GenerateContentResponse:
    try:
        check_json(response, "the model server's response")
    except InvalidInputError as exc:
        raise InvalidResponseError(str(exc)) from None
    try:
        return GenerateContentResponse.model_validate(response)
    except pydantic.ValidationError as exc:
        raise InvalidResponseError(f"the model server's response is not valid: {exc}") from None


# --------------------------------------------------------------------------- config


def parse_config(config: Any) -> GenerateContentConfig | None:
    if config is None:
        return None
    if isinstance(config, GenerateContentConfig):
        return config
    _check_values(config, "config")
    try:
        return GenerateContentConfig.model_validate(config)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(f"invalid config: {exc}") from None


def stored_config(wire: dict[str, Any]) -> GenerateContentConfig:
    """A config as recorded in the log, as a GenerateContentConfig."""
    try:
        return GenerateContentConfig.model_validate(wire)
    except pydantic.ValidationError as exc:
        raise IntegrityError(
            f"the log holds a config that is not a valid GenerateContentConfig ({exc}); it "
            "was not written by chatledger: check where the log (or an imported file) came from"
        ) from None


def _system_instruction_to_wire(value: Any) -> WireContent:
    what = "config.system_instruction"
    if isinstance(value, Content):
        return _to_wire(value, what)
    if isinstance(value, list):
        return {"role": "user", "parts": [_to_wire(_to_part(item), what) for item in value]}
    return {"role": "user", "parts": [_to_wire(_to_part(value), what)]}


def config_to_wire(
    config: GenerateContentConfig | None,
    declare: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """A config as stored in events: wire form, client-only and secret fields left out,
    Python function tools replaced by their declarations (as they are sent)."""
    if config is None:
        return None
    tools = config.tools
    schema, json_schema = config.response_schema, config.response_json_schema
    wire = _to_wire(
        config.model_copy(
            update={
                "tools": None,
                "http_options": None,
                "response_schema": None,
                "response_json_schema": None,
            }
        ),
        "config",
    )
    # Schemas as google-genai sends them (docs/chat-api.md#parsed).
    if schema is not None:
        wire["responseSchema"] = schema_to_wire(schema)
    if json_schema is not None:
        wire["responseJsonSchema"] = json_schema_to_wire(json_schema)
    if config.system_instruction is not None:
        wire["systemInstruction"] = _system_instruction_to_wire(config.system_instruction)
    if tools is not None:
        wire["tools"] = tools_to_wire(tools, declare)
    # Python function tools are declared from their signatures: defaults must be JSON too.
    check_json(wire, "config")
    return wire


def tools_to_wire(
    tools: list[Any], declare: Callable[[Any], dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """As google-genai's ``t_tools``: all function declarations merged into one tool,
    placed after the other tools."""
    declarations: list[dict[str, Any]] = []
    result: list[dict[str, Any]] = []
    for tool in tools:
        if is_python_function_tool(tool):
            if declare is None:
                raise InvalidInputError("Python function tools need a declaration builder")
            declarations.append(declare(tool))
            continue
        wire = _to_wire(tool, "config.tools") if isinstance(tool, Tool) else dict(tool)
        found = wire.pop("functionDeclarations", None)
        if found:
            declarations.extend(found)
            if wire:
                result.append(wire)
        else:
            if found is not None:
                wire["functionDeclarations"] = found
            result.append(wire)
    if declarations:
        result.append({"functionDeclarations": declarations})
    return result


def merge_configs(
    base: dict[str, Any] | None, override: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Per-message config merged over the chat's: set fields win, unset ones are kept."""
    if not override:
        return base
    if not base:
        return override
    return {**base, **override}


def request_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The request body fields (besides ``contents``) for a stored config."""
    if not config:
        return {}
    body: dict[str, Any] = {}
    generation: dict[str, Any] = {}
    for key, value in config.items():
        if key in _CLIENT_SIDE or value is None:
            continue
        if key in _TOP_LEVEL:
            body[key] = value
        else:
            generation[key] = value
    if generation:
        body["generationConfig"] = generation
    return body


_ENCODE = msgspec.json.encode


def contents_digest(contents: list[WireContent]) -> str:
    """sha256 of the request contents, recorded with each model call for replay checks."""
    return hashlib.sha256(_ENCODE(contents)).hexdigest()
