"""Reading the times a log records, the same way on every supported Python.

``datetime.fromisoformat`` differs between versions: Python 3.10 accepts only 3 or 6
fractional digits and no ``Z``, while 3.11 accepts nearly any ISO 8601 text. A time read
from a log, an import or another host goes through :func:`parse_utc_time`, which accepts
one form on all of them (see docs/events.md, "The envelope"): chatledger writes
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (:func:`chatledger.events.envelope.utc_now`).
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = ["parse_utc_time"]

#: Date, time, an optional fraction of 1 to 9 digits, and ``Z`` or an offset.
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def parse_utc_time(text: str) -> _dt.datetime:
    """Parse an ISO 8601 time with its UTC offset into an aware datetime.

    Accepts ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1 to 9 digits (digits past
    the sixth are dropped, as Python 3.11 does), then ``Z`` or ``+HH:MM``/``-HH:MM``.

    Args:
        text: The time, as recorded (for example ``2026-12-06T08:00:00.123456Z``).

    Returns:
        The moment, with its offset as ``tzinfo``.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` is not in that form, or names no real moment (a 30th of
            February, an hour 24, an offset of a day or more).
    """
    if not isinstance(text, str):
        raise TypeError(f"a time must be a string, not {type(text).__name__}")
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r:.60} is not a time like 2026-12-06T08:00:00.123456Z")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset == "Z":
        zone = _dt.timezone.utc
    else:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if minutes > 59:
            raise ValueError(f"{text!r:.60} has an offset with {minutes} minutes")
        delta = _dt.timedelta(hours=hours, minutes=minutes)
        # timezone() itself refuses an offset of a day or more (ValueError).
        zone = _dt.timezone(-delta if offset[0] == "-" else delta)
    return _dt.datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        int((fraction or "").ljust(6, "0")[:6]),
        tzinfo=zone,
    )
