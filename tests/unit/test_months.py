"""Calendar months: the ``Month`` type, and arithmetic that must not slip a month at the ends
of a year or a month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from shared.months import (
    Month,
    add_months,
    month_end,
    month_of,
    month_start,
    months_apart,
    months_ending,
    shift_month,
)

MONTHS: TypeAdapter[str] = TypeAdapter(Month)


# ---------------------------------------------------------------------------------------------
# Month


@pytest.mark.parametrize("text", ["2026-01", "2026-12", "1900-01", "2999-12"])
def test_a_month_is_four_digits_of_year_and_two_of_month(text: str) -> None:
    assert MONTHS.validate_python(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "0000-01",
        "0000-12",
        "0001-01",
        "1899-12",
        "3000-01",
        "9999-12",
        "2026-00",
        "2026-13",
        "2026-1",
        "26-01",
        "2026-01-01",
        "2026/01",
        " 2026-01",
        "\u0662\u0660\u0662\u0666-01",
    ],
    ids=repr,
)
def test_text_that_is_not_a_month_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        MONTHS.validate_python(text)


def test_a_field_of_type_month_keeps_its_own_description() -> None:
    class Audit(BaseModel):
        month: Month = Field(description="Audit month, YYYY-MM.")

    schema = Audit.model_json_schema()["properties"]["month"]

    assert schema["description"] == "Audit month, YYYY-MM."
    assert "pattern" in schema
    with pytest.raises(ValidationError, match="month"):
        Audit(month="0000-01")


async def test_a_query_parameter_of_type_month_refuses_year_0000_as_a_client_error() -> None:
    app = FastAPI()

    @app.get("/figures")
    async def figures(month: Month) -> str:
        return month_start(month).isoformat()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        good = await client.get("/figures", params={"month": "2026-11"})
        year_zero = await client.get("/figures", params={"month": "0000-01"})

    assert (good.status_code, good.json()) == (200, "2026-11-01T00:00:00+00:00")
    assert year_zero.status_code == 422


# ---------------------------------------------------------------------------------------------
# month_of, month_start, month_end


def test_month_of_is_the_month_in_utc_not_the_local_one() -> None:
    late_evening_bst = datetime(2026, 10, 31, 23, 30, tzinfo=timezone(timedelta(hours=1)))
    new_year_in_new_york = datetime(2026, 12, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5)))

    assert month_of(late_evening_bst) == "2026-10"
    assert month_of(new_year_in_new_york) == "2027-01"
    assert month_of(datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)) == "2027-01"
    assert month_of(datetime(2027, 2, 1, tzinfo=UTC)) == "2027-02"


def test_month_start_is_the_first_instant_in_utc() -> None:
    assert month_start("2026-11") == datetime(2026, 11, 1, tzinfo=UTC)
    assert month_start("0001-01") == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("month", "end"),
    [
        ("2026-11", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2027, 1, 1, tzinfo=UTC)),
        ("2024-02", datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_month_end_is_the_next_month_s_start(month: str, end: datetime) -> None:
    assert month_end(month) == end
    assert month_of(end - timedelta(microseconds=1)) == month
    assert month_of(end) == shift_month(month, 1)


# ---------------------------------------------------------------------------------------------
# shift_month, months_apart, months_ending


@pytest.mark.parametrize(
    ("month", "months", "shifted"),
    [
        ("2026-11", 0, "2026-11"),
        ("2026-11", 1, "2026-12"),
        ("2026-12", 1, "2027-01"),
        ("2026-11", 2, "2027-01"),
        ("2026-01", -1, "2025-12"),
        ("2026-01", -12, "2025-01"),
        ("2026-01", -13, "2024-12"),
        ("2026-12", -12, "2025-12"),
        ("2026-06", 30, "2028-12"),
        ("2026-06", -30, "2023-12"),
    ],
)
def test_shift_month_crosses_years_both_ways(month: str, months: int, shifted: str) -> None:
    assert shift_month(month, months) == shifted
    assert shift_month(shifted, -months) == month


@pytest.mark.parametrize(
    ("first", "second", "apart"),
    [
        ("2026-11", "2026-11", 0),
        ("2025-12", "2026-01", 1),
        ("2025-12", "2026-11", 11),
        ("2025-01", "2026-01", 12),
        ("2026-11", "2025-12", 11),
    ],
)
def test_months_apart_counts_across_years_in_either_order(
    first: str, second: str, apart: int
) -> None:
    assert months_apart(first, second) == apart


def test_months_ending_lists_the_months_up_to_the_given_one_oldest_first() -> None:
    assert months_ending("2026-02", 3) == ["2025-12", "2026-01", "2026-02"]
    assert months_ending("2026-01", 1) == ["2026-01"]
    assert months_ending("2026-12", 13)[0] == "2025-12"
    assert months_ending("2026-12", 0) == []


# ---------------------------------------------------------------------------------------------
# add_months


@pytest.mark.parametrize(
    ("moment", "months", "later"),
    [
        (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), 1, datetime(2026, 4, 30, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), -1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 12, datetime(2025, 2, 28, tzinfo=UTC)),
        (datetime(2032, 2, 29, tzinfo=UTC), -72, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2026, 11, 5, tzinfo=UTC), 14, datetime(2028, 1, 5, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC)),
        (datetime(2027, 1, 15, tzinfo=UTC), -1, datetime(2026, 12, 15, tzinfo=UTC)),
        (datetime(2026, 5, 31, tzinfo=UTC), 0, datetime(2026, 5, 31, tzinfo=UTC)),
    ],
)
def test_add_months_keeps_the_day_or_takes_the_month_s_last(
    moment: datetime, months: int, later: datetime
) -> None:
    assert add_months(moment, months) == later


def test_add_months_keeps_the_time_and_its_zone() -> None:
    bst = timezone(timedelta(hours=1))

    assert add_months(datetime(2026, 8, 31, 17, 45, 12, tzinfo=bst), 1) == datetime(
        2026, 9, 30, 17, 45, 12, tzinfo=bst
    )
