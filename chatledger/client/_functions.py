"""Automatic function calling: declaring Python functions and calling them for the model.

Declarations are google-genai 3.3.0's ``FunctionDeclaration.from_callable(...,
use_json_schema=True)``: the name, the whole docstring as the description, and JSON
schemas of the parameters and the return type built by pydantic. Calls convert the
model's arguments as google-genai's AFC does (pydantic models built from dicts, no other
coercion), answer ``{"result": value}`` or ``{"error": "Failed to invoke function ..."}``
in its words, and run plain functions of an async chat in worker threads.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import time
import types
import typing
from collections.abc import Callable
from typing import Any

import pydantic
import pydantic_core

from ..errors import FunctionCallingError
from ..events.envelope import check_json, safe_text
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


_PARAMETER_KINDS = (
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
    inspect.Parameter.POSITIONAL_ONLY,
)
_ADAPTER_CONFIG = pydantic.ConfigDict(arbitrary_types_allowed=True)
#: What describing a type as a JSON schema raises for a type pydantic cannot describe.
_SCHEMA_ERRORS = (
    pydantic.PydanticUserError,
    pydantic.PydanticSchemaGenerationError,
    TypeError,
    NameError,
)


def _is_pydantic_model(annotation: Any) -> bool:
    try:
        return inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel)
    except TypeError:
        return False


def _type_schema(annotation: Any) -> dict[str, Any]:
    # As google-genai: a pydantic model's own schema, else a TypeAdapter's; a tuple of
    # fixed length also gets ``unevaluatedItems: false``.
    if _is_pydantic_model(annotation):
        schema: dict[str, Any] = annotation.model_json_schema()
        return schema
    schema = pydantic.TypeAdapter(annotation, config=_ADAPTER_CONFIG).json_schema()
    if (
        schema.get("maxItems")
        and schema.get("prefixItems")
        and len(schema["prefixItems"]) == schema["maxItems"]
        and schema.get("type") == "array"
    ):
        schema["unevaluatedItems"] = False
    return schema


def _unsupported(param: inspect.Parameter, name: str, exc: Exception) -> FunctionCallingError:
    return FunctionCallingError(
        f"cannot declare parameter {param} of function {name} to the model ({exc}); give it "
        "a type hint pydantic can describe as JSON Schema, or declare the function yourself "
        "with a FunctionDeclaration"
    )


def _required(properties: dict[str, Any]) -> list[str]:
    # google-genai's _get_required_fields_from_json_schema: every parameter whose schema
    # has no default, except those with an empty schema (Any).
    required: list[str] = []
    for field_name, schema in properties.items():
        if not schema:
            continue
        if "nullable" in schema and not schema["nullable"]:
            required.append(field_name)
        if "default" not in schema and field_name not in required:
            required.append(field_name)
    return required


def declare(func: Callable[..., Any]) -> dict[str, Any]:
    """The wire FunctionDeclaration of a Python function.

    Exactly google-genai 3.3.0's ``FunctionDeclaration.from_callable(...,
    use_json_schema=True)``: each named parameter's JSON Schema (a pydantic model's own
    schema, or a ``TypeAdapter``'s; ``$defs`` gathered at the top), its default, the
    ``required`` list (parameters without a default), the return type's schema (only
    when the function has parameters), and the whole docstring as the description.
    ``*args`` / ``**kwargs`` are not declared.
    """
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise FunctionCallingError(f"tool {func!r} has no usable __name__ to declare it by")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
    except (NameError, TypeError, ValueError) as exc:
        raise FunctionCallingError(
            f"cannot read the signature and type hints of function {name}: {exc}"
        ) from None
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for param_name, param in signature.parameters.items():
        if param.kind not in _PARAMETER_KINDS:
            continue
        annotation = param.annotation
        if isinstance(annotation, str):
            annotation = hints.get(param_name, annotation)
        try:
            if annotation is inspect.Parameter.empty:
                raise TypeError("it has no type hint")
            schema = _type_schema(annotation)
        except _SCHEMA_ERRORS as exc:
            raise _unsupported(param, name, exc) from None
        defs.update(schema.pop("$defs", {}))
        defs.update(schema.pop("definitions", {}))
        if param.default is not inspect.Parameter.empty:
            schema["default"] = _jsonable(param.default)
        properties[param_name] = schema
    doc = func.__doc__
    declaration: dict[str, Any] = {
        "description": inspect.cleandoc(doc) if isinstance(doc, str) and doc else "",
        "name": name,
    }
    if not properties:
        return declaration
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if defs:
        parameters["$defs"] = defs
    parameters["required"] = _required(properties)
    declaration["parametersJsonSchema"] = parameters
    returns = signature.return_annotation
    if returns is inspect.Signature.empty:
        return declaration
    if isinstance(returns, str):
        returns = hints.get("return", returns)
    try:
        declaration["responseJsonSchema"] = _type_schema(returns)
    except _SCHEMA_ERRORS as exc:
        raise FunctionCallingError(
            f"cannot declare the return type {returns!r} of function {name} to the model "
            f"({exc}); annotate it with a type pydantic can describe, or leave it out"
        ) from None
    return declaration


def _declares_functions(tool: Any) -> bool:
    """A tool object or dict holding function declarations (not a Python function)."""
    if is_python_function_tool(tool):
        return False
    if isinstance(tool, dict):
        return bool(tool.get("function_declarations") or tool.get("functionDeclarations"))
    return bool(getattr(tool, "function_declarations", None))


def function_map(
    config: GenerateContentConfig | None, *, is_async: bool
) -> dict[str, Callable[..., Any]]:
    """Name -> Python function for the callable tools of ``config``, which AFC calls.

    Empty when a tool holds ``function_declarations`` next to the Python functions: as
    google-genai 3.3.0 (which finds such tools "incompatible with automatic function
    calling"), AFC is then off for the whole request and every function call is returned
    to the caller.
    """
    functions: dict[str, Callable[..., Any]] = {}
    if config is None or not config.tools:
        return functions
    if any(_declares_functions(tool) for tool in config.tools):
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
    """What one function call produced: the response dict, or the error text.

    ``error_type`` names the kind of failure for tracing (the ``error.type`` of its
    span, docs/integrations.md#opentelemetry): the class of the exception the function
    raised, ``invalid_arguments`` when the model's arguments did not fit its parameters,
    ``unknown_function`` when no such function is among the tools."""

    __slots__ = ("duration_ms", "error", "error_type", "response")

    def __init__(
        self,
        response: dict[str, Any],
        error: str | None,
        duration_ms: float,
        error_type: str | None = None,
    ) -> None:
        self.response = response
        self.error = error
        self.duration_ms = duration_ms
        self.error_type = error_type


def _jsonable(value: Any) -> Any:
    """``value`` as JSON the log can store; its ``repr`` when it is not (NaN, lone
    surrogates, nesting deeper than MAX_NESTING, objects pydantic cannot serialize)."""
    try:
        jsonable = pydantic_core.to_jsonable_python(value)
        check_json(jsonable, "the value")  # InvalidInputError is a ValueError
        return jsonable
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError, RecursionError):
        try:
            return repr(value)
        except RecursionError:
            return f"<{type(value).__name__} nested too deeply to show>"


class _ArgumentError(Exception):
    """An argument the model sent does not fit the parameter's annotation."""


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _convert_value(value: Any, annotation: Any, param_name: str, func_name: str) -> Any:
    # google-genai 3.3.0's convert_if_exist_pydantic_model, step for step (its checks are
    # isinstance checks: no coercion), so that a function gets the very same arguments.
    if isinstance(value, dict) and _is_pydantic_model(annotation):
        try:
            return annotation(**value)
        except pydantic.ValidationError as exc:
            raise _ArgumentError(
                f"Failed to parse parameter {param_name} for function {func_name} from "
                f"function call part because function call argument value {value} is not "
                f"compatible with parameter annotation {annotation}, due to error {exc}"
            ) from None
    if isinstance(value, list) and typing.get_origin(annotation) is list:
        item_type = typing.get_args(annotation)[0]
        return [_convert_value(item, item_type, param_name, func_name) for item in value]
    if isinstance(value, dict) and typing.get_origin(annotation) is dict:
        _, value_type = typing.get_args(annotation)
        return {
            key: _convert_value(item, value_type, param_name, func_name)
            for key, item in value.items()
        }
    if _is_union(annotation):
        for arg in typing.get_args(annotation):
            if (
                (typing.get_args(arg) and typing.get_origin(arg) is list)
                or isinstance(value, arg)
                or (isinstance(value, dict) and _is_pydantic_model(arg))
            ):
                try:
                    return _convert_value(value, arg, param_name, func_name)
                except pydantic.ValidationError:
                    continue
        raise _ArgumentError(
            f"Failed to parse parameter {param_name} for function {func_name} from function "
            f"call part because function call argument value {value} cannot be converted to "
            f"parameter annotation {annotation}."
        )
    if isinstance(value, int) and annotation is float:
        return value
    if not isinstance(value, annotation):
        raise _ArgumentError(
            f"Failed to parse parameter {param_name} for function {func_name} from function "
            f"call part because function call argument value {value} is not compatible "
            f"with parameter annotation {annotation}."
        )
    return value


def _mentions_enum(annotation: Any) -> bool:
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return True
    return any(_mentions_enum(arg) for arg in typing.get_args(annotation))


@functools.lru_cache(maxsize=512)
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation, config=_ADAPTER_CONFIG)


def _validate(annotation: Any, value: Any) -> Any:
    """pydantic's (lax) validation of ``value`` as ``annotation``: raises on failure."""
    if _is_pydantic_model(annotation):
        return annotation.model_validate(value)
    try:
        adapter = _adapter(annotation)
    except TypeError:  # an unhashable annotation
        adapter = pydantic.TypeAdapter(annotation, config=_ADAPTER_CONFIG)
    return adapter.validate_python(value)


def prepare_call(
    func: Callable[..., Any], args: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """Convert the model's ``args`` for ``func``: (kwargs, None) or (None, error text).

    As google-genai 3.3.0: numbers like ``3.0`` become ``3``, only the function's named
    parameters are taken from ``args`` (others are ignored; missing ones make the call
    fail), a dict becomes the pydantic model its parameter is annotated with, and every
    other value must already be an instance of its annotation (no coercion: ``"3"`` is
    not an ``int``), else the call is answered with google-genai's error text. Where
    google-genai's checks cannot work at all (``Literal``, ``Any``, ``tuple`` and other
    parameterized annotations make its ``isinstance`` raise) or an ``Enum`` parameter gets
    its value, chatledger validates the value with pydantic instead, and answers with
    google-genai's error text only when that fails too.
    """
    name = func.__name__
    args = _numbers_as_ints(args)
    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):
        hints = {}
    kwargs: dict[str, Any] = {}
    for param_name, param in inspect.signature(func).parameters.items():
        if param_name not in args:
            continue
        annotation = param.annotation
        if isinstance(annotation, str) and param_name in hints:
            annotation = hints[param_name]
        value = args[param_name]
        try:
            kwargs[param_name] = _convert_value(value, annotation, param_name, name)
        except Exception as exc:  # google-genai answers whatever its conversion raised
            if (
                annotation is inspect.Parameter.empty
                or isinstance(annotation, str)
                or (isinstance(exc, _ArgumentError) and not _mentions_enum(annotation))
            ):
                return None, str(exc)
            try:
                kwargs[param_name] = _validate(annotation, value)
            except Exception:
                return None, str(exc)
    return kwargs, None


def _failed(
    func: Callable[..., Any], kwargs: dict[str, Any], args: dict[str, Any], exc: Exception
) -> str:
    # google-genai's wording, so that the model sees the same error text from both.
    return safe_text(
        f"Failed to invoke function {func.__name__} with converted arguments {kwargs} "
        f"from model returned function call argument {args} because of error {exc}"
    )


def run_function(func: Callable[..., Any], args: dict[str, Any]) -> FunctionOutcome:
    """Call ``func`` with the model's ``args``; shape the result as google-genai does:
    ``{"result": value}``, or ``{"error": text}`` when it raised."""
    started = time.perf_counter()
    args = _numbers_as_ints(args)
    kwargs, error = prepare_call(func, args)
    error_type = "invalid_arguments"
    if kwargs is not None:
        try:
            result = func(**kwargs)
        except Exception as exc:
            error = _failed(func, kwargs, args, exc)
            error_type = type(exc).__qualname__
        else:
            return FunctionOutcome({"result": _jsonable(result)}, None, _ms_since(started))
    return FunctionOutcome({"error": error}, error, _ms_since(started), error_type)


async def run_function_async(func: Callable[..., Any], args: dict[str, Any]) -> FunctionOutcome:
    """As :func:`run_function` for the async chat: a coroutine function is awaited; a plain
    function runs in a worker thread (as google-genai does), so that it does not block
    the event loop and several calls of one response can run at once."""
    if not is_async_function_tool(func):
        return await asyncio.to_thread(run_function, func, args)
    started = time.perf_counter()
    args = _numbers_as_ints(args)
    kwargs, error = prepare_call(func, args)
    error_type = "invalid_arguments"
    if kwargs is not None:
        try:
            result = await func(**kwargs)
        except Exception as exc:
            error = _failed(func, kwargs, args, exc)
            error_type = type(exc).__qualname__
        else:
            return FunctionOutcome({"result": _jsonable(result)}, None, _ms_since(started))
    return FunctionOutcome({"error": error}, error, _ms_since(started), error_type)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def unknown_function(name: str | None) -> FunctionOutcome:
    """The response for a call to a function that is not among the tools (see
    docs/chat-api.md#function-calling, "Unknown function names")."""
    error = f"function {name!r} is not among this chat's tools; it was not called"
    return FunctionOutcome({"error": error}, error, 0.0, "unknown_function")
