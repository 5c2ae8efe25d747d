"""parse_utc_time: the one parser of recorded times, the same on Python 3.10 and 3.11+
(``datetime.fromisoformat`` on 3.10 refuses a ``Z`` and fractions other than 3 or 6
digits; 3.11 accepts almost anything)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatledger.client import _leases
from chatledger.events import ConversationStarted, NewEvent, SQLiteStore
from chatledger.events.audit import export_conversation, import_lines
from chatledger.events.times import parse_utc_time

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T08:00:00.123456Z", dt.datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2026-12-06T08:00:00Z", dt.datetime(2026, 12, 6, 8, 0, 0, tzinfo=UTC)),
        ("2026-12-06T08:00:00.1Z", dt.datetime(2026, 12, 6, 8, 0, 0, 100000, tzinfo=UTC)),
        ("2026-12-06T08:00:00.12Z", dt.datetime(2026, 12, 6, 8, 0, 0, 120000, tzinfo=UTC)),
        ("2026-12-06T08:00:00.1234Z", dt.datetime(2026, 12, 6, 8, 0, 0, 123400, tzinfo=UTC)),
        ("2026-12-06T08:00:00.12345Z", dt.datetime(2026, 12, 6, 8, 0, 0, 123450, tzinfo=UTC)),
        # Past six digits the rest is dropped (not rounded), as Python 3.11 does.
        ("2026-12-06T08:00:00.123456789Z", dt.datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2024-02-29T23:59:59.999999+00:00", dt.datetime(2024, 2, 29, 23, 59, 59, 999999, UTC)),
    ],
)
def test_the_forms_it_reads(text: str, expected: dt.datetime) -> None:
    parsed = parse_utc_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == dt.timedelta(0)


def test_an_offset_names_the_same_moment_in_utc() -> None:
    india = parse_utc_time("2026-12-06T13:30:00.5+05:30")
    pacific = parse_utc_time("2026-12-06T00:00:00.5-08:00")
    assert india.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert india == pacific == dt.datetime(2026, 12, 6, 8, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-06T08:00:00.123456",  # no offset: which moment is it?
        "2026-12-06 08:00:00.123456Z",  # a space for the T
        "2026-12-06T08:00:00.123456z",
        "2026-12-06T08:00:00.Z",
        "2026-12-06T08:00:00.1234567890Z",  # ten digits
        "2026-12-06T08:00Z",
        "20261206T080000Z",  # the basic form
        "2026-W49-7T08:00:00Z",
        "2026-02-30T08:00:00Z",
        "2026-12-06T24:00:00Z",
        "2026-12-06T08:60:00Z",
        "2026-12-06T08:00:60Z",  # a leap second: Python has none
        "2026-12-06T08:00:00+24:00",
        "2026-12-06T08:00:00+05:60",
        "2026-12-06T08:00:00+0530",
        " 2026-12-06T08:00:00Z",
        "2026-12-06T08:00:00Z\n",
        "٢٠٢٦-12-06T08:00:00Z",  # other digits than 0-9
        "",
    ],
)
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc_time(text)


def test_a_value_that_is_not_a_string_is_a_type_error() -> None:
    for value in (None, 1765008000, b"2026-12-06T08:00:00Z"):
        with pytest.raises(TypeError):
            parse_utc_time(value)  # type: ignore[arg-type]


@given(
    moment=st.datetimes(
        min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    digits=st.integers(0, 9),
    offset_minutes=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
def test_any_moment_written_in_any_accepted_form_reads_back(
    moment: dt.datetime, digits: int, offset_minutes: int
) -> None:
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    local = moment.astimezone(zone)
    fraction = f"{local.microsecond:06d}{'987'}"[:digits]
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        + (f".{fraction}" if digits else "")
        + f"{sign}{hours:02d}:{minutes:02d}"
    )
    kept = int(fraction.ljust(6, "0")[:6]) if digits else 0
    assert parse_utc_time(text) == local.replace(microsecond=kept)


def test_what_the_log_records_reads_back_through_every_reader() -> None:
    with SQLiteStore(":memory:") as store:
        started = NewEvent(data=ConversationStarted(model="gemini-test"))
        store.append("c-times", [started], expected_version=0)
        (event,) = store.read("c-times")
        moment = event.recorded_at_datetime
        assert moment.tzinfo is not None
        assert moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == event.recorded_at
        # The lease watch reads the same moment; a time it cannot read is None.
        assert _leases._timestamp(event.recorded_at) == moment.timestamp()
        assert (
            _leases._timestamp("2026-12-06T08:00:00.1Z")
            == parse_utc_time("2026-12-06T08:00:00.1Z").timestamp()
        )
        assert _leases._timestamp("2026-12-06T08:00:00") is None
        # An export imports: its times are checked by the same parser.
        lines = list(export_conversation(store, "c-times"))
    with SQLiteStore(":memory:") as copy:
        assert import_lines(copy, lines).conversations == ["c-times"]
        assert copy.read("c-times")[0].recorded_at == event.recorded_at
