"""``python -m tests.upstream``: the counts it prints are the outcomes pytest reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.upstream", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_counts_are_passed_of_ported_per_group() -> None:
    # validate_response: 7 ports that pass; edit_history: 1 port that is an xfail.
    run = _run("-k", "validate_response or test_edit_history")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-2:] == [
        "upstream google-genai chat tests: 7 of 7",
        "upstream ChatSession tests: 0 of 1",
    ]
    assert re.search(r"\b7 passed, \d+ deselected, 1 xfailed\b", run.stdout), run.stdout


def test_a_failing_port_fails_the_run() -> None:
    run = _run("-k", "test_chat_roles", "--runxfail", "-x", "--collect-only")
    assert run.returncode == 0
    assert run.stdout.splitlines()[-1] == "upstream ChatSession tests: 0 of 1"
    run = _run("-k", "test_edit_history", "--runxfail")
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == "upstream ChatSession tests: 0 of 1"
