"""The public surface: what ``__all__`` lists is exactly what each public module exports,
every listed name resolves, and every error derives from ChatledgerError."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import chatledger
from chatledger import errors

# Module-level helpers other chatledger modules import; not part of the promised surface.
INTERNAL_HELPERS = {
    "is_python_function_tool",
    "is_async_function_tool",
    "data_to_builtins",
    "decode_data",
    "register_upcaster",
}

PUBLIC_MODULES = [
    "chatledger",
    "chatledger.errors",
    "chatledger.types",
    "chatledger.events",
    "chatledger.projections",
    "chatledger.client",
    "chatledger.client.transports",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    listed = set(module.__all__)
    assert len(listed) == len(module.__all__), "duplicates in __all__"
    for attribute in listed:
        assert hasattr(module, attribute), f"{name}.__all__ lists missing {attribute}"
    defined_here = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith(name)
    }
    assert defined_here <= listed | INTERNAL_HELPERS, defined_here - listed


def test_every_error_is_a_chatledger_error() -> None:
    for attribute in errors.__all__:
        value = getattr(errors, attribute)
        if inspect.isclass(value):
            assert issubclass(value, errors.ChatledgerError), attribute
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.ClientError, errors.APIError)
    assert issubclass(errors.ServerError, errors.APIError)
    assert issubclass(errors.ConcurrencyError, errors.StoreError)


def test_api_error_format_and_class_choice() -> None:
    body = {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    error = errors.APIError.from_status(429, body)
    assert isinstance(error, errors.ClientError)
    assert (error.code, error.status, error.error_message) == (
        429,
        "RESOURCE_EXHAUSTED",
        "slow down",
    )
    assert str(error) == f"429 RESOURCE_EXHAUSTED. {body}"
    assert isinstance(errors.APIError.from_status(503, {}), errors.ServerError)


def test_importing_chatledger_is_light() -> None:
    code = "import chatledger, sys; print(sorted(m for m in ('llama_cpp', 'psycopg', 'google.genai') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version_is_exposed() -> None:
    assert chatledger.__version__.count(".") == 2
