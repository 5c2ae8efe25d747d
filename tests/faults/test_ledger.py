"""The fault suite's own bookkeeping: what tests record is what the table sums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults import ledger, report


def test_records_are_summed_into_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults.jsonl"
    monkeypatch.setenv("CHATLEDGER_FAULTS_REPORT", str(path))
    ledger.record("server", "closed/gemini", faults=3)
    ledger.record("server", "closed/gemini", faults=4)
    tally = ledger.Tally("input", inputs=10)
    tally.answered(None)
    tally.answered(ValueError("no"))
    tally.record("messages/sync")
    rows = report.summarise(path.read_text(encoding="utf-8").splitlines())
    assert rows == [
        {"area": "input", "operation": "messages/sync", "kill_points": 0, "faults": 0,
         "inputs": 10, "events_lost": 0, "invariants_broken": 0},
        {"area": "server", "operation": "closed/gemini", "kill_points": 0, "faults": 7,
         "inputs": 0, "events_lost": 0, "invariants_broken": 0},
    ]  # fmt: skip
    table = report.render(rows)
    assert "| total" in table and "| server | closed/gemini |" in table.replace("  ", " ")
    assert "messages/sync: 10 inputs, {'accepted': 1, 'refused: ValueError': 1}" in (
        capsys.readouterr().out
    )


def test_a_broken_invariant_is_recorded_and_then_fails_the_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "faults.jsonl"
    monkeypatch.setenv("CHATLEDGER_FAULTS_REPORT", str(path))
    tally = ledger.Tally("store", faults=2)
    assert tally.check(True, "fine")
    assert not tally.check(False, "the head moved")
    with pytest.raises(AssertionError, match="the head moved"):
        tally.record("locked/sqlite")
    assert json.loads(path.read_text(encoding="utf-8"))["invariants_broken"] == 1
    with pytest.raises(AssertionError, match="lost one"):
        ledger.Tally("store").expect(False, "lost one")


def test_outside_make_faults_recording_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATLEDGER_FAULTS_REPORT", raising=False)
    monkeypatch.chdir(tmp_path)
    ledger.record("server", "anything", faults=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("CHATLEDGER_FAULTS_SCALE", "full")
    assert ledger.scale(2, 200) == 200 and ledger.full_scale()
    monkeypatch.setenv("CHATLEDGER_FAULTS_SCALE", "")
    assert ledger.scale(2, 200) == 2


def test_the_attack_table_sums_each_class_and_fails_on_one_not_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "faults.jsonl"
    monkeypatch.setenv("CHATLEDGER_FAULTS_REPORT", str(path))
    ledger.record("store", "damaged-head-deleted/sqlite", faults=2)
    ledger.record("store", "damaged-lineage-cycle/postgres", faults=1)
    ledger.record("store", "conflicting-retry/sqlite", faults=3, invariants_broken=1)
    ledger.record("server", "closed-mid-body/gemini", faults=5)  # in no attack class
    summary = report.attacks(report.summarise(path.read_text(encoding="utf-8").splitlines()))
    by_name = {str(row["attack"])[:1]: row for row in summary}
    assert len(summary) == 9
    assert by_name["1"] == {
        "attack": report.ATTACKS[0][0], "tried_on": "postgres, sqlite", "tried": 3,
        "held": 3, "events_lost": 0,
    }  # fmt: skip
    assert (by_name["8"]["tried"], by_name["8"]["held"]) == (3, 2)
    assert by_name["4"]["tried"] == 0 and by_name["4"]["tried_on"] == ""
    assert "| 1 a head row (streams) trusted, not checked" in report.render_attacks(summary)

    # `make faults` fails while any class was not tried.
    monkeypatch.setattr("sys.argv", ["report", str(path), "--json", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="no row tried 2 an import"):
        report.main()
    written = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert written["attacks"] == summary and len(written["operations"]) == 4
    assert "attack class" in capsys.readouterr().out
