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

    python -m services.referral.erasure FAMILY_ID --reason "subject access: erasure request 42"
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path
from pydantic import BaseModel, Field

from services.referral import domain
from services.referral.access import AccessLog
from services.referral.settings import ReferralSettings
from shared.auth import SignedIn
from shared.clock import utc_now
from shared.events import FamilyMatchRule
from shared.mongo import Database, MongoClient, Session, create_mongo_client, in_transaction

REFERRAL_PERSONAL_FIELDS = ("submission", "social_care_case_reference")
REJECTION_PERSONAL_FIELDS = ("submission_json", "raw_base64", "raw_text")


class FamilyNotFound(Exception):
    pass


class FamilyHasOpenCase(Exception):
    pass


@dataclass(frozen=True)
class Erased:
    family_id: str
    referrals: int
    rejections: int
    keys: int
    erased_at: datetime


def raw_family_keys(document: Any) -> set[str]:
    """The family keys a stored submission's children give, read from the raw JSON, so a
    rejected (never validated) request for the same children is found too."""
    if not isinstance(document, dict):
        return set()
    address = document.get("address")
    if not isinstance(address, dict):
        address = {}
    postcode = str(address.get("postcode") or "")
    postcode = domain.normalise_postcode(postcode) or postcode
    keys: set[str] = set()
    for child in document.get("children") or []:
        if not isinstance(child, dict):
            continue
        if isinstance(child.get("upn"), str):
            material = domain.normalise_upn(child["upn"])
            keys.add(domain._hash(f"{FamilyMatchRule.UPN.value}:{material}"))
        if isinstance(child.get("nhs_number"), str):
            material = domain.normalise_nhs_number(child["nhs_number"])
            keys.add(domain._hash(f"{FamilyMatchRule.NHS_NUMBER.value}:{material}"))
        name, born = child.get("family_name"), child.get("date_of_birth")
        if isinstance(name, str) and isinstance(born, str):
            material = "|".join((domain.normalise_name(name), born, postcode))
            keys.add(domain._hash(f"{FamilyMatchRule.SURNAME_DOB_POSTCODE.value}:{material}"))
    return keys


async def erase_family(
    client: MongoClient, db: Database, family_id: str, *, by: str, reason: str, now: datetime
) -> Erased:
    """Remove the family's personal data in one transaction; refuse while a case is open."""

    async def erase(session: Session) -> Erased:
        family = await db["families"].find_one({"_id": family_id}, session=session)
        if family is None:
            raise FamilyNotFound(family_id)
        if family.get("open_cases"):
            raise FamilyHasOpenCase(family_id)
        referrals = (
            await db["referrals"]
            .find({"family_id": family_id}, {"partner_id": 1, "submission_id": 1}, session=session)
            .to_list()
        )
        keys = {
            document["_id"]
            for document in await db["family_keys"]
            .find({"family_id": family_id}, {"_id": 1}, session=session)
            .to_list()
        }
        submissions = {(r["partner_id"], r["submission_id"]) for r in referrals}
        rejection_ids = [
            rejection["_id"]
            for rejection in await db["rejections"]
            .find({"personal_data_erased_at": None}, session=session)
            .to_list()
            if (rejection.get("partner_id"), rejection.get("submission_id")) in submissions
            or raw_family_keys(_submission_of(rejection)) & keys
        ]
        erased = {"personal_data_erased_at": now}
        await db["referrals"].update_many(
            {"family_id": family_id},
            {"$unset": dict.fromkeys(REFERRAL_PERSONAL_FIELDS, ""), "$set": erased},
            session=session,
        )
        await db["rejections"].update_many(
            {"_id": {"$in": rejection_ids}},
            {"$unset": dict.fromkeys(REJECTION_PERSONAL_FIELDS, ""), "$set": erased},
            session=session,
        )
        removed = await db["family_keys"].delete_many({"family_id": family_id}, session=session)
        await db["families"].update_one(
            {"_id": family_id},
            {"$set": {**erased, "erasure": {"by": by, "reason": reason}}},
            session=session,
        )
        return Erased(family_id, len(referrals), len(rejection_ids), removed.deleted_count, now)

    return await in_transaction(client, erase)


def _submission_of(rejection: dict[str, Any]) -> Any:
    text = rejection.get("submission_json")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class ErasureRequest(BaseModel):
    reason: str = Field(
        min_length=5, max_length=500, description="Why, e.g. the request's reference (recorded)."
    )


class ErasureView(BaseModel):
    family_id: str = Field(description="The family whose personal data was erased.")
    referrals: int = Field(description="Referrals whose submission was removed.")
    rejections: int = Field(description="Rejections whose stored submission was removed.")
    keys: int = Field(description="Family keys removed: the family will not be matched again.")
    erased_at: datetime = Field(description="When.")


def add_erasure(
    app: FastAPI,
    client: MongoClient,
    db: Database,
    log: AccessLog,
    clock: Callable[[], datetime],
) -> None:
    @app.post(
        "/families/{family_id}/erasure",
        tags=["data protection"],
        summary="Erase a family's personal data, keeping the statistics",
        responses={404: {"description": "Unknown family"}, 409: {"description": "Case open"}},
    )
    async def post_erasure(
        family_id: Annotated[str, Path(max_length=80)], request: ErasureRequest, admin: SignedIn
    ) -> ErasureView:
        try:
            erased = await erase_family(
                client, db, family_id, by=admin.sub, reason=request.reason, now=clock()
            )
        except FamilyNotFound:
            raise HTTPException(404, f"no family {family_id}") from None
        except FamilyHasOpenCase:
            raise HTTPException(
                409, f"family {family_id} has an open case: close it before erasing"
            ) from None
        await log.record(
            admin,
            action="erase_family",
            family_id=family_id,
            resource=family_id,
            reason=request.reason,
        )
        return ErasureView(**asdict(erased))


async def _main(family_id: str, reason: str, by: str) -> int:
    settings = ReferralSettings()
    client = create_mongo_client(settings.mongodb_uri, app_name="referral-erasure")
    db = client[settings.database_name]
    try:
        now = utc_now()
        erased = await erase_family(client, db, family_id, by=by, reason=reason, now=now)
        await AccessLog(db, utc_now).record(
            by,
            role="operator",
            action="erase_family",
            family_id=family_id,
            resource=family_id,
            reason=reason,
        )
    except FamilyNotFound:
        print(f"no family {family_id}")
        return 1
    except FamilyHasOpenCase:
        print(f"family {family_id} has an open case: close it before erasing")
        return 1
    finally:
        await client.close()
    print(json.dumps(asdict(erased), default=str))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.referral.erasure",
        description="Erase a family's personal data from the referral service.",
    )
    parser.add_argument("family_id")
    parser.add_argument("--reason", required=True, help="why (recorded in the access log)")
    parser.add_argument("--by", default="operator", help="who is erasing (recorded)")
    args = parser.parse_args(argv)
    raise SystemExit(asyncio.run(_main(args.family_id, args.reason, args.by)))


if __name__ == "__main__":
    main()
