"""Run the upstream ports and print how many pass: ``python -m tests.upstream``.

Prints, after pytest's own report::

    upstream google-genai chat tests: P of N
    upstream ChatSession tests: P of N

N counts every ported test (each parametrised case, as pytest does); P those that
passed (an expected failure is not a pass). Extra arguments go to pytest. The exit
status is pytest's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
GROUPS = {
    "google-genai chat tests": "test_genai_",
    "ChatSession tests": "test_chatsession",
}


class _Tally:
    """Counts the collected and the passed tests of each group."""

    def __init__(self) -> None:
        self.collected = dict.fromkeys(GROUPS, 0)
        self.passed = dict.fromkeys(GROUPS, 0)

    @staticmethod
    def _group(nodeid: str) -> str | None:
        name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        return next((group for group, prefix in GROUPS.items() if name.startswith(prefix)), None)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # what runs: deselected tests are not counted
            group = self._group(item.nodeid)
            if group is not None:
                self.collected[group] += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" or not report.passed or hasattr(report, "wasxfail"):
            return
        group = self._group(report.nodeid)
        if group is not None:
            self.passed[group] += 1

    def lines(self) -> list[str]:
        return [
            f"upstream {group}: {self.passed[group]} of {self.collected[group]}" for group in GROUPS
        ]


def main(argv: list[str]) -> int:
    tally = _Tally()
    args: list[Any] = [str(HERE), "-q", "-p", "no:cacheprovider", *argv]
    code = int(pytest.main(args, plugins=[tally]))
    print()
    for line in tally.lines():
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
