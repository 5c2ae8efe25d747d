"""The public surface: what ``__all__`` lists is exactly what each public module exports,
every listed name resolves, and every error derives from ChatledgerError."""

from __future__ import annotations

import ast
import graphlib
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

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
    "chatledger.cli",
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


# --------------------------------------------------------------------------- imports

PACKAGE = Path(chatledger.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of the package at ``root`` and the package's modules it imports:
    anywhere in the file, inside functions and ``if TYPE_CHECKING:`` blocks included."""
    modules = {_module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def test_the_cycle_check_sees_imports_under_type_checking(tmp_path: Path) -> None:
    # The kind of cycle chatledger.client once had: a real import one way, a
    # TYPE_CHECKING import the other way.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    )
    (package / "c.py").write_text("def f():\n    from . import a\n")
    graph = import_graph(package)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.a"},
        "pkg.c": {"pkg", "pkg.a"},
    }
    assert import_cycle(graph) is not None


def test_no_import_cycle_not_even_under_type_checking() -> None:
    assert import_cycle(import_graph()) is None


LAYERS = {
    # A module of the left-hand package never imports one of the right-hand packages.
    "chatledger.events": ("chatledger.projections", "chatledger.client", "chatledger.cli"),
    "chatledger.projections": ("chatledger.client", "chatledger.cli"),
    "chatledger.client": ("chatledger.cli",),
}


def test_no_import_runs_up_the_layers() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for layer, above in LAYERS.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == a or target.startswith(a + ".") for a in above)
    ]
    assert upward == []


def test_the_conversation_sees_only_its_settings_not_the_client() -> None:
    graph = import_graph()
    for module in ("_conversation", "_fold", "_leases", "_settings", "_listing", "_summaries"):
        assert "chatledger.client._client" not in graph[f"chatledger.client.{module}"]
        assert "chatledger.client._chat" not in graph[f"chatledger.client.{module}"]
    # The summary types are a leaf: they import nothing of chatledger.
    assert graph["chatledger.client._summaries"] == set()
