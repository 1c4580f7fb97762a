"""Erasing a family's personal data from the front door, keeping the statistics.

What goes: the submissions (names, dates of birth, UPNs, NHS numbers, address, referrer and
consent details) of the family's referrals and of rejections of the same submissions or the
same children, the social care case reference, and the family's keys (the hashes that
recognise its children). What stays is pseudonymous: referral ids, the family id, district,
children's ages, needs, level, decisions and dates, so the figures already reported (and
any rebuilt) do not change, and case events for the family id still apply.

Without its keys the family cannot be recognised again: a later request for the same
children starts a new family with a new id. That is the point of erasure. A family with an
open case is refused: close the case first, so no worker is left with a case that the front
door can no longer match to the family.

This module holds the rules; ``handlers/erasure.py`` the use case and ``erasure.py`` the
operators' command:

    python -m services.referral.erasure FAMILY_ID --reason "subject access: erasure request 42"
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral import domain

REFERRAL_PERSONAL_FIELDS = ("submission", "social_care_case_reference")
REJECTION_PERSONAL_FIELDS = ("submission_json", "raw_base64", "raw_text")


class FamilyNotFound(domain.NotFound):
    def __init__(self, family_id: str) -> None:
        super().__init__(f"no family {family_id}")


class FamilyHasOpenCase(domain.Conflict):
    def __init__(self, family_id: str) -> None:
        super().__init__(f"family {family_id} has an open case: close it before erasing")


@dataclass(frozen=True)
class Erased:
    family_id: str
    referrals: int
    rejections: int
    keys: int
    erased_at: datetime


@dataclass(frozen=True)
class StoredRejection:
    """A rejection whose personal data is still held, with its submission as it came (the
    JSON read back, or None when it was not JSON)."""

    rejection_id: str
    partner_id: str | None
    submission_id: str | None
    submission: Any


def raw_family_keys(document: Any, match_keys: domain.MatchKeys) -> set[str]:
    """The family keys a stored submission's children give, read from the raw JSON, so a
    rejected (never validated) request for the same children is found too. Derived by
    ``domain.child_family_keys``, as matching derives them."""
    if not isinstance(document, dict):
        return set()
    address = document.get("address")
    if not isinstance(address, dict):
        address = {}
    postcode = str(address.get("postcode") or "")
    keys: set[str] = set()
    for child in document.get("children") or []:
        if not isinstance(child, dict):
            continue
        for key in domain.child_family_keys(
            match_keys,
            upn=_text(child.get("upn")),
            nhs_number=_text(child.get("nhs_number")),
            family_name=_text(child.get("family_name")),
            date_of_birth=_text(child.get("date_of_birth")),
            postcode=postcode,
        ):
            keys.add(key.value)
    return keys


def concerns_family(
    rejection: StoredRejection,
    submissions: Collection[tuple[str, str]],
    keys: Collection[str],
    match_keys: domain.MatchKeys,
) -> bool:
    """A rejection is the family's when it rejected one of the family's submissions, or its
    request names one of the family's children."""
    if (rejection.partner_id, rejection.submission_id) in submissions:
        return True
    return not raw_family_keys(rejection.submission, match_keys).isdisjoint(keys)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
