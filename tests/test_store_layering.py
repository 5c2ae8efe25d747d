"""The store layer's imports run one way: events <- projections <- readmodels / client.

``chatledger.events`` (kinds, envelope, stores) imports nothing above it;
``chatledger.projections`` (pure folds) imports only ``events``; ``chatledger.readmodels``
(the projection runner, which does I/O) may import both, and nothing below imports it.
Read from the source with ``ast``, so a deferred import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "chatledger"

#: For each package, the chatledger packages it must never import.
FORBIDDEN = {
    "events": {"projections", "readmodels", "client", "cli", "legacy", "types"},
    "projections": {"readmodels", "client", "cli", "legacy"},
    "readmodels": {"client", "cli", "legacy"},
}


def chatledger_imports(path: Path, source: str | None = None) -> set[str]:
    """The chatledger packages the module at ``path`` imports (absolute or relative);
    ``source`` instead of the file's text, if given."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found: set[str] = set()
    text = source if source is not None else path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "chatledger" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_upward(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules, f"no modules in chatledger/{layer}"
    upward = {
        str(path.relative_to(PACKAGE)): sorted(chatledger_imports(path) & FORBIDDEN[layer])
        for path in modules
    }
    assert {name: bad for name, bad in upward.items() if bad} == {}


def test_the_checker_sees_relative_and_deferred_imports() -> None:
    # The check itself must be able to fail: a module of chatledger/events that imports
    # the client inside a function, relatively, and the read models absolutely.
    probe = PACKAGE / "events" / "probe.py"
    source = "def f():\n    from ..client import Client\n    import chatledger.readmodels.runner\n"
    assert chatledger_imports(probe, source) == {"client", "readmodels"}
    assert chatledger_imports(probe, "from . import store\nfrom .. import errors\n") == {
        "events",
        "errors",
    }
