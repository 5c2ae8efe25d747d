"""The README's Python blocks run as written, in order, in a fresh folder, offline on
the local model (the eventsourcing habit: documentation code is tested code)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)

pytestmark = pytest.mark.local_model


def test_the_readme_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 3


def test_every_python_block_runs_as_written(tmp_path: Path) -> None:
    # In order and in one folder: the second block resumes the first one's conversation.
    for index, block in enumerate(BLOCKS):
        script = tmp_path / f"block{index}.py"
        script.write_text(block, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"README block {index} failed:\n{block}\n{result.stderr}"
        if "ReplayTransport" in block:
            # What the comments promise: the changed message is caught where it changed.
            assert (
                "replay differs from the log at turn 2 (model call 2), contents[2].parts[0].text: "
                "recorded 'Now one for a dog.', now 'Now one for a parrot.'"
            ) in result.stdout
            assert result.stdout.rstrip().endswith("True")
    assert (tmp_path / "chats.db").exists()
