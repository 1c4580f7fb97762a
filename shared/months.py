"""Calendar months, written ``YYYY-MM``, and the arithmetic every service does on them.

A fact belongs to the month of its own time in UTC, so a late-evening event falls in the
same month in every service, whatever the local clock said, and a replay puts it there again.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, StringConstraints

MONTH_PATTERN = r"^(?:19|2[0-9])[0-9]{2}-(?:0[1-9]|1[0-2])$"
"""``YYYY-MM`` in ASCII digits, years 1900 to 2999: every month a council's records or
reports can be about, with room on both sides for the arithmetic (a month's end, a trend's
36 months back), which ``datetime`` could not do at years 1 or 9999."""

EARLIEST = "1900-01"
"""The first month the ``Month`` type takes."""

Month = Annotated[
    str,
    StringConstraints(pattern=MONTH_PATTERN),
    Field(description="A calendar month, YYYY-MM."),
]
"""A month as text, for pydantic fields and FastAPI query parameters alike."""


def month_of(at: datetime) -> str:
    """The calendar month of an aware ``at`` in UTC."""
    utc = at.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def month_start(month: str) -> datetime:
    """The month's first instant, in UTC."""
    year, number = _year_and_number(month)
    return datetime(year, number, 1, tzinfo=UTC)


def month_end(month: str) -> datetime:
    """The first instant after the month: what stands strictly before it stands at its end."""
    return month_start(shift_month(month, 1))


def shift_month(month: str, months: int) -> str:
    """The month ``months`` later (earlier when negative)."""
    index = _index(month) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_apart(first: str, second: str) -> int:
    """How many months lie between the two, whichever comes first."""
    return abs(_index(first) - _index(second))


def months_ending(month: str, count: int) -> list[str]:
    """The ``count`` months up to and including ``month``, oldest first."""
    return [shift_month(month, step) for step in range(1 - count, 1)]


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later, or the month's last day when it is shorter."""
    year, number = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    last_day = calendar.monthrange(year, number + 1)[1]
    return moment.replace(year=year, month=number + 1, day=min(moment.day, last_day))


def _year_and_number(month: str) -> tuple[int, int]:
    year, number = month.split("-")
    return int(year), int(number)


def _index(month: str) -> int:
    year, number = _year_and_number(month)
    return year * 12 + number - 1
