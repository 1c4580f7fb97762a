"""Retention: closed families whose personal data has been kept its full period.

A family is due for review when it has no open case, its last case closed at least
``EARLYHELP_RETENTION_YEARS`` (default 6) years ago, and no request has come for it since
that cut-off. Review, not deletion: a person decides (a sibling's later case, a legal hold),
then erases with ``POST /families/{id}/erasure``.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from shared.mongo import Database


def years_before(moment: datetime, years: int) -> datetime:
    year = moment.year - years
    day = min(moment.day, calendar.monthrange(year, moment.month)[1])
    return moment.replace(year=year, day=day)


def due_for_review(family: dict[str, Any], now: datetime, years: int) -> bool:
    """The rule, for one family record of the ``families`` collection."""
    if family.get("open_cases") or family.get("personal_data_erased_at") is not None:
        return False
    closed = family.get("last_closed_at")
    if closed is None:
        return False
    cutoff = years_before(now, years)
    last_referral = family.get("last_referral_at") or closed
    return bool(closed <= cutoff and last_referral <= cutoff)


class RetentionItem(BaseModel):
    family_id: str = Field(description="The family due for review.")
    district: str | None = Field(description="Its district.")
    last_closed_at: datetime = Field(description="When its last case closed.")
    last_referral_at: datetime | None = Field(description="When its last request came.")
    review_due_since: datetime = Field(description="When its retention period ended.")


class RetentionReview(BaseModel):
    as_of: datetime = Field(description="The time the review was worked out at.")
    retention_years: int = Field(description="Years personal data is kept after closure.")
    families: list[RetentionItem] = Field(description="Families due for review, oldest first.")


async def review(db: Database, now: datetime, years: int) -> RetentionReview:
    candidates = (
        await db["families"]
        .find(
            {
                "last_closed_at": {"$ne": None, "$lte": years_before(now, years)},
                "personal_data_erased_at": None,
            }
        )
        .to_list()
    )
    due = sorted(
        (family for family in candidates if due_for_review(family, now, years)),
        key=lambda family: family["last_closed_at"],
    )
    return RetentionReview(
        as_of=now,
        retention_years=years,
        families=[
            RetentionItem(
                family_id=family["_id"],
                district=family.get("district"),
                last_closed_at=family["last_closed_at"],
                last_referral_at=family.get("last_referral_at"),
                review_due_since=_plus_years(
                    max(
                        family["last_closed_at"],
                        family.get("last_referral_at") or family["last_closed_at"],
                    ),
                    years,
                ),
            )
            for family in due
        ],
    )


def _plus_years(moment: datetime, years: int) -> datetime:
    return years_before(moment, -years)


def add_retention_review(
    app: FastAPI, db: Database, years: int, clock: Callable[[], datetime]
) -> None:
    @app.get(
        "/retention/review",
        tags=["data protection"],
        summary="Closed families whose personal data is past its retention period",
    )
    async def retention_review() -> RetentionReview:
        return await review(db, clock(), years)
