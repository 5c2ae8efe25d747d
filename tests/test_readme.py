"""The Python blocks of the README and of every docs page run as written, offline (the
eventsourcing habit: documentation code is tested code).

A block fenced as ``python`` is run; one fenced as ``py`` is shown, not run (it needs an
API key, a server or a database the reader supplies). The blocks of one page run in
order, in one fresh folder, so a later block may use what an earlier one wrote (the
README's second block resumes the first one's conversation). Each page runs in its own
folder, so pages never depend on each other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Pages whose blocks load the embedded SmolLM2 model (the others use ScriptedTransport).
LOCAL_MODEL = re.compile(r"""model=["'](local|smollm2)["']""")


def blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


PAGES = [README, *sorted(DOCS.rglob("*.md"))]
RUNNABLE = [page for page in PAGES if blocks(page)]


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def run_blocks(page: Path, folder: Path) -> list[str]:
    """Run every Python block of ``page`` in ``folder``; return each block's stdout."""
    outputs = []
    for index, block in enumerate(blocks(page)):
        script = folder / f"block{index}.py"
        script.write_text(block, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, (
            f"{page_id(page)} block {index} failed:\n{block}\n{result.stderr}"
        )
        outputs.append(result.stdout)
    return outputs


def test_the_readme_and_the_docs_have_runnable_examples() -> None:
    assert len(blocks(README)) >= 3
    pages = {page_id(page) for page in RUNNABLE}
    for expected in ("docs/quickstart.md", "docs/chat-api.md", "docs/branching.md"):
        assert expected in pages, f"{expected} has no runnable Python block"


def test_a_fence_that_is_not_python_is_not_run() -> None:
    # The collector itself: a ``py`` block and an indented fence are left alone.
    page = "text\n```py\nraise SystemExit(1)\n```\n```python\nprint('ran')\n```\n"
    assert FENCE.findall(page) == ["print('ran')\n"]


@pytest.mark.local_model
def test_every_readme_block_runs_as_written(tmp_path: Path) -> None:
    outputs = run_blocks(README, tmp_path)
    (replay,) = [
        out
        for block, out in zip(blocks(README), outputs, strict=True)
        if "ReplayTransport" in block
    ]
    # What the comments promise: the changed message is caught where it changed.
    assert (
        "replay differs from the log at turn 2 (model call 2), contents[2].parts[0].text: "
        "recorded 'Now one for a dog.', now 'Now one for a parrot.'"
    ) in replay
    assert replay.rstrip().endswith("True")
    assert (tmp_path / "chats.db").exists()


DOC_PAGES = [
    pytest.param(
        page,
        id=page_id(page),
        marks=[pytest.mark.local_model] if LOCAL_MODEL.search(page.read_text("utf-8")) else [],
    )
    for page in RUNNABLE
    if page != README
]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_every_docs_block_runs_as_written(page: Path, tmp_path: Path) -> None:
    run_blocks(page, tmp_path)
