"""Structured output: ``response_schema`` sent as google-genai 3.3.0 sends it, and
``response.parsed`` read as it reads it (docs/chat-api.md#parsed).

google-genai is not a dependency of chatledger, so its two code paths are ported here
(``_transformers.t_schema`` / ``process_schema`` for the request, and
``GenerateContentResponse._from_response`` for ``parsed``); the differential tests
(tests/test_differential_parsed.py) hold the ports to the original.

A schema may be a pydantic model class, a type such as ``list[Model]`` or ``int``, an
``Enum``, a JSON-schema dict or a :class:`~chatledger.types.Schema`.
``response_json_schema`` is sent as it is given (google-genai's ``t_json_schema``); a
pydantic class given there is sent as its ``model_json_schema()``.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import inspect
import json
import types as builtin_types
import typing
from typing import Any

import pydantic

from ..errors import InvalidInputError
from ..types import GenerateContentResponse, Schema

__all__ = ["parse_response", "schema_to_wire"]

_UNION_TYPES = (typing.Union, builtin_types.UnionType)

# google-genai's Schema fields, in its order (Python name -> camelCase name); it refuses
# any other key.
_SCHEMA_FIELDS = {
    "additional_properties": "additionalProperties",
    "defs": "defs",
    "ref": "ref",
    "any_of": "anyOf",
    "default": "default",
    "description": "description",
    "enum": "enum",
    "example": "example",
    "format": "format",
    "items": "items",
    "max_items": "maxItems",
    "max_length": "maxLength",
    "max_properties": "maxProperties",
    "maximum": "maximum",
    "min_items": "minItems",
    "min_length": "minLength",
    "min_properties": "minProperties",
    "minimum": "minimum",
    "nullable": "nullable",
    "pattern": "pattern",
    "properties": "properties",
    "property_ordering": "propertyOrdering",
    "required": "required",
    "title": "title",
    "type": "type",
}
# Either spelling given -> the Python name google-genai sends.
_FIELD_NAMES = {
    **{name: name for name in _SCHEMA_FIELDS},
    **{wire: name for name, wire in _SCHEMA_FIELDS.items()},
}


# --------------------------------------------------------------------------- the request


def _handle_null_fields(schema: dict[str, Any]) -> None:
    if schema.get("type") == "null":
        schema["nullable"] = True
        del schema["type"]
    elif "anyOf" in schema:
        for item in list(schema["anyOf"]):
            if "type" in item and item["type"] == "null":
                schema["nullable"] = True
                schema["anyOf"].remove({"type": "null"})
                if len(schema["anyOf"]) == 1:
                    for key, value in schema["anyOf"][0].items():
                        schema[key] = value
                    del schema["anyOf"]


def _process_schema(
    schema: dict[str, Any], defs: dict[str, Any] | None = None, visited: set[int] | None = None
) -> None:
    """google-genai's ``process_schema``, in place: ``$defs`` inlined, nulls made
    ``nullable``, a one-value string Literal made an enum, properties ordered."""
    visited = set() if visited is None else visited
    if id(schema) in visited:
        return
    visited.add(id(schema))
    if schema.get("title") == "PlaceholderLiteralEnum":
        del schema["title"]
    for from_name, to_name in (
        ("additional_properties", "additionalProperties"),
        ("any_of", "anyOf"),
        ("prefix_items", "prefixItems"),
        ("property_ordering", "propertyOrdering"),
    ):
        if (value := schema.pop(from_name, None)) is not None:
            schema[to_name] = value
    if defs is None:
        defs = schema.pop("$defs", {})
        for sub_schema in defs.values():
            _process_schema(sub_schema, defs, visited)
    _handle_null_fields(schema)
    if (ref := schema.pop("$ref", None)) is not None:
        schema.update(defs[ref.split("defs/")[-1]])

    def recurse(sub_schema: dict[str, Any]) -> dict[str, Any]:
        if (ref := sub_schema.pop("$ref", None)) is not None:
            sub_schema = defs[ref.split("defs/")[-1]]
            if id(sub_schema) in visited:
                return {}
        _process_schema(sub_schema, defs, visited)
        return sub_schema

    if (any_of := schema.get("anyOf")) is not None:
        schema["anyOf"] = [recurse(sub_schema) for sub_schema in any_of]
        visited.remove(id(schema))
        return
    schema_type = schema.get("type")
    if isinstance(schema_type, enum.Enum):
        schema_type = schema_type.value
    if isinstance(schema_type, str):
        schema_type = schema_type.upper()
    const = schema.get("const")
    if const is not None:
        if schema_type != "STRING":
            raise InvalidInputError("response_schema: Literal values must be strings")
        schema["enum"] = [const]
        del schema["const"]
    if schema_type == "OBJECT":
        if (properties := schema.get("properties")) is not None:
            for name, sub_schema in list(properties.items()):
                properties[name] = recurse(sub_schema)
            if len(properties) > 1 and "propertyOrdering" not in schema:
                schema["property_ordering"] = list(properties)
        if isinstance(additional := schema.get("additionalProperties"), dict):
            schema["additionalProperties"] = recurse(additional)
    elif schema_type == "ARRAY":
        if (items := schema.get("items")) is not None:
            schema["items"] = recurse(items)
        if (prefixes := schema.get("prefixItems")) is not None:
            schema["prefixItems"] = [recurse(prefix) for prefix in prefixes]
    visited.remove(id(schema))


def _as_schema_fields(schema: Any, where: str) -> Any:
    """A processed schema as google-genai's ``Schema`` sends it: its fields only, in
    its field order, by their Python names (``property_ordering``, ``any_of``: the API
    reads both spellings), ``type`` upper case, unset fields left out."""
    if not isinstance(schema, dict):
        return schema
    given: dict[str, Any] = {}
    for key, value in schema.items():
        name = _FIELD_NAMES.get(key)
        if name is None:
            raise InvalidInputError(
                f"{where} has the key {key!r}, which a Gemini schema does not have "
                f"(it has: {', '.join(_SCHEMA_FIELDS.values())})"
            )
        if value is not None:
            given[name] = value
    wire: dict[str, Any] = {}
    for name in _SCHEMA_FIELDS:
        if name not in given:
            continue
        value = given[name]
        if name == "type" and isinstance(value, str):
            value = value.upper()
        elif name == "properties" and isinstance(value, dict):
            value = {k: _as_schema_fields(v, f"{where}.{k}") for k, v in value.items()}
        elif name in ("items", "additional_properties") and isinstance(value, dict):
            value = _as_schema_fields(value, f"{where}.{name}")
        elif name == "any_of" and isinstance(value, list):
            value = [_as_schema_fields(item, f"{where}.anyOf") for item in value]
        wire[name] = value
    return wire


def _placeholder_schema(origin: Any) -> dict[str, Any]:
    placeholder = pydantic.create_model("Placeholder", placeholder=(origin, ...))
    schema = placeholder.model_json_schema()
    _process_schema(schema)
    result: dict[str, Any] = schema["properties"]["placeholder"]
    return result


def _enum_schema(origin: type[enum.Enum]) -> dict[str, Any]:
    members = list(origin)
    for member in members:
        if not isinstance(member.value, int | str):
            raise InvalidInputError(
                f"response_schema: Enum member {member.name} value must be a string or "
                f"integer, got {type(member.value)}"
            )
    if any(isinstance(member.value, int) for member in members):
        # As google-genai: an int enum is sent as the strings of its values.
        as_strings: Any = enum.Enum(origin.__name__, [str(m.value) for m in members], type=str)  # type: ignore[misc]
        return _placeholder_schema(as_strings)
    return _placeholder_schema(origin)


def schema_to_wire(origin: Any) -> dict[str, Any] | None:
    """``response_schema`` as google-genai 3.3.0 sends it (its ``t_schema``)."""
    if not origin:
        return None
    where = "config.response_schema"
    if isinstance(origin, dict):
        schema = copy.deepcopy(origin)
    elif isinstance(origin, enum.EnumMeta):
        schema = _enum_schema(origin)  # type: ignore[arg-type]
        return typing.cast(dict[str, Any], _as_schema_fields(schema, where))
    elif isinstance(origin, Schema):
        schema = origin.model_dump(exclude_unset=True)
    elif (
        not isinstance(origin, builtin_types.GenericAlias)
        and isinstance(origin, type)
        and issubclass(origin, pydantic.BaseModel)
    ):
        schema = origin.model_json_schema()
    elif (
        isinstance(origin, builtin_types.GenericAlias | type | builtin_types.UnionType)
        or typing.get_origin(origin) in _UNION_TYPES
    ):
        try:
            schema = _placeholder_schema(origin)
        except pydantic.PydanticSchemaGenerationError as exc:
            raise InvalidInputError(f"{where}: unsupported type {origin!r}: {exc}") from None
        return typing.cast(dict[str, Any], _as_schema_fields(schema, where))
    else:
        raise InvalidInputError(f"{where}: unsupported schema type {origin!r}")
    _process_schema(schema)
    return typing.cast(dict[str, Any], _as_schema_fields(schema, where))


def json_schema_to_wire(origin: Any) -> Any:
    """``response_json_schema`` as sent: as given (a pydantic class: its JSON schema)."""
    if inspect.isclass(origin) and issubclass(origin, pydantic.BaseModel):
        return origin.model_json_schema()
    return origin


# --------------------------------------------------------------------------- parsed


def parse_response(
    response: GenerateContentResponse, response_schema: Any, response_json_schema: Any
) -> None:
    """Set ``response.parsed`` from its text as google-genai 3.3.0 does: a pydantic
    object, a typed value (``list[Model]``, ...), an Enum member, or JSON data (a dict
    schema); left None when the text does not fit the schema."""
    schema = response_schema if response_schema is not None else response_json_schema
    if schema is None:
        return
    text = response.text
    if text is None:
        return
    if (
        inspect.isclass(schema)
        and not isinstance(schema, builtin_types.GenericAlias)
        and issubclass(schema, pydantic.BaseModel)
    ):
        with contextlib.suppress(pydantic.ValidationError, json.JSONDecodeError):
            response.parsed = schema.model_validate_json(text)
    elif isinstance(schema, enum.EnumMeta):
        with contextlib.suppress(ValueError):
            response.parsed = schema(text.replace('"', ""))
    elif isinstance(schema, builtin_types.GenericAlias | type):
        _parse_placeholder(response, schema, text)
    elif isinstance(schema, dict | Schema):
        with contextlib.suppress(json.JSONDecodeError):
            response.parsed = json.loads(text)
    elif typing.get_origin(schema) in _UNION_TYPES:
        for member in typing.get_args(schema):
            if inspect.isclass(member) and issubclass(member, pydantic.BaseModel):
                _parse_placeholder(response, schema, text)
            else:
                with contextlib.suppress(json.JSONDecodeError):
                    response.parsed = json.loads(text)


def _parse_placeholder(response: GenerateContentResponse, schema: Any, text: str) -> None:
    try:
        placeholder = pydantic.create_model("Placeholder", placeholder=(schema, ...))
        response.parsed = placeholder.model_validate({"placeholder": json.loads(text)}).placeholder  # type: ignore[attr-defined]
    except (json.JSONDecodeError, pydantic.ValidationError):
        pass
