"""Automatic function calling: declaring Python functions and calling them for the model.

Declarations follow google-genai 3.3.0's ``FunctionDeclaration.from_callable(...,
use_json_schema=True)``: the name, the whole docstring as the description, and JSON
schemas of the parameters and the return type built by pydantic.
"""

from __future__ import annotations

import functools
import inspect
import time
import typing
from collections.abc import Callable
from typing import Any

import pydantic
import pydantic_core

from ..errors import FunctionCallingError
from ..types import GenerateContentConfig, is_async_function_tool, is_python_function_tool

__all__ = [
    "DEFAULT_MAXIMUM_REMOTE_CALLS",
    "FunctionOutcome",
    "afc_budget",
    "declare",
    "function_map",
    "prepare_call",
    "run_function",
    "run_function_async",
    "unknown_function",
]

DEFAULT_MAXIMUM_REMOTE_CALLS = 10


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _strip_titles(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", None)
    if not defs:
        return schema

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.split("/")[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


def _parameters_model(func: Callable[..., Any]) -> type[pydantic.BaseModel] | None:
    name = getattr(func, "__name__", type(func).__name__)
    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):
        hints = {}
    fields: dict[str, Any] = {}
    for param_name, param in inspect.signature(func).parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise FunctionCallingError(
                f"function {name} takes *args or **kwargs, which cannot be declared to the "
                "model; give it named parameters"
            )
        annotation = hints.get(param_name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param_name] = (annotation, default)
    if not fields:
        return None
    return pydantic.create_model(
        f"{name}_parameters", __config__=pydantic.ConfigDict(arbitrary_types_allowed=True), **fields
    )


def declare(func: Callable[..., Any]) -> dict[str, Any]:
    """The wire FunctionDeclaration of a Python function."""
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise FunctionCallingError(f"tool {func!r} has no usable __name__ to declare it by")
    declaration: dict[str, Any] = {"description": inspect.getdoc(func) or "", "name": name}
    try:
        model = _parameters_model(func)
        if model is not None:
            declaration["parametersJsonSchema"] = _strip_titles(_inline_refs(model.model_json_schema()))
        hints = typing.get_type_hints(func)
        if "return" in hints and hints["return"] is not type(None):
            schema = pydantic.TypeAdapter(hints["return"]).json_schema()
            declaration["responseJsonSchema"] = _strip_titles(_inline_refs(schema))
    except pydantic.PydanticUserError as exc:
        raise FunctionCallingError(f"cannot declare function {name}: {exc}") from None
    except (NameError, TypeError):
        pass
    return declaration


def function_map(config: GenerateContentConfig | None, *, is_async: bool) -> dict[str, Callable[..., Any]]:
    """Name -> Python function for the callable tools of ``config``."""
    functions: dict[str, Callable[..., Any]] = {}
    if config is None or not config.tools:
        return functions
    for tool in config.tools:
        if is_python_function_tool(tool):
            if is_async_function_tool(tool) and not is_async:
                raise FunctionCallingError(
                    f"Function {tool.__name__} is a coroutine function, which a synchronous "
                    "chat cannot call; use client.aio.chats, or call it yourself and send "
                    "its result as a function response"
                )
            functions[tool.__name__] = tool
    return functions


def afc_budget(config: GenerateContentConfig | None) -> int | None:
    """The maximum number of model calls in a turn, or None when AFC is disabled."""
    afc = config.automatic_function_calling if config else None
    if afc is None:
        return DEFAULT_MAXIMUM_REMOTE_CALLS
    maximum = afc.maximum_remote_calls
    if maximum is not None and int(maximum) <= 0:
        return None
    if afc.disable:
        return None
    return int(maximum) if maximum is not None else DEFAULT_MAXIMUM_REMOTE_CALLS


def _numbers_as_ints(value: Any) -> Any:
    # As google-genai: JSON numbers like 3.0 become 3 before the call.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_as_ints(item) for item in value]
    return value


class FunctionOutcome:
    """What one function call produced: the response dict, or the error text."""

    __slots__ = ("duration_ms", "error", "response")

    def __init__(self, response: dict[str, Any], error: str | None, duration_ms: float) -> None:
        self.response = response
        self.error = error
        self.duration_ms = duration_ms


def _jsonable(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
        return repr(value)


@functools.lru_cache(maxsize=512)
def _cached_parameters_model(func: Callable[..., Any]) -> type[pydantic.BaseModel] | None:
    return _parameters_model(func)


def prepare_call(
    func: Callable[..., Any], args: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """Convert the model's ``args`` for ``func``: (kwargs, None) or (None, error text)."""
    name = func.__name__
    converted = _numbers_as_ints(args)
    model = _cached_parameters_model(func)
    if model is None:
        return ({}, None) if not converted else (None, f"{name} takes no arguments, got {sorted(converted)}")
    try:
        validated = model.model_validate(converted)
    except pydantic.ValidationError as exc:
        return None, (
            f"Failed to invoke function {name} with arguments {converted} from model "
            f"returned function call argument {args} because of error {exc}"
        )
    return {field: getattr(validated, field) for field in converted if field in type(validated).model_fields}, None


def _failed(func: Callable[..., Any], kwargs: dict[str, Any], args: dict[str, Any], exc: Exception) -> str:
    # google-genai's wording, so that the model sees the same error text from both.
    return (
        f"Failed to invoke function {func.__name__} with converted arguments {kwargs} "
        f"from model returned function call argument {args} because of error {exc}"
    )


def run_function(func: Callable[..., Any], args: dict[str, Any]) -> FunctionOutcome:
    """Call ``func`` with the model's ``args``; shape the result as google-genai does."""
    started = time.perf_counter()
    kwargs, error = prepare_call(func, args)
    if kwargs is not None:
        try:
            result = func(**kwargs)
        except Exception as exc:
            error = _failed(func, kwargs, args, exc)
        else:
            return FunctionOutcome({"result": _jsonable(result)}, None, _ms_since(started))
    return FunctionOutcome({"error": error}, error, _ms_since(started))


async def run_function_async(func: Callable[..., Any], args: dict[str, Any]) -> FunctionOutcome:
    """As :func:`run_function`, awaiting coroutine functions."""
    started = time.perf_counter()
    kwargs, error = prepare_call(func, args)
    if kwargs is not None:
        try:
            result = func(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            error = _failed(func, kwargs, args, exc)
        else:
            return FunctionOutcome({"result": _jsonable(result)}, None, _ms_since(started))
    return FunctionOutcome({"error": error}, error, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def unknown_function(name: str | None) -> FunctionOutcome:
    """The response for a call to a function that is not among the tools (SEMANTICS §3.5)."""
    error = f"function {name!r} is not among this chat's tools; it was not called"
    return FunctionOutcome({"error": error}, error, 0.0)
