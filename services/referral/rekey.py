"""Rebuild the family-match index under the configured secret, after it rotates.

    python -m services.referral.rekey

The keys that match a request to a family are HMAC-SHA-256 of the children's identifiers
under ``EARLYHELP_MATCH_KEY_SECRET``. To rotate the secret: stop the referral service, set
the new secret, run this, start the service. It derives every family's keys again from the
submissions the service keeps (an erased family has none, and is not matched again) and
removes the old ones. Family ids are random, not derived from the children, so none of them
changes, and nothing in the other services does.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError

from services.referral import domain
from services.referral.settings import ReferralSettings, match_keys_of
from services.referral.store import rekey_families
from shared.clock import utc_now
from shared.events import ReferralSubmitted


async def rekey(settings: ReferralSettings) -> dict[str, int]:
    match_keys = match_keys_of(settings)

    def keys_of(submission: Any) -> list[domain.FamilyKey]:
        try:
            return domain.family_keys(ReferralSubmitted.model_validate(submission), match_keys)
        except ValidationError:
            return []

    written, read = await rekey_families(
        settings.mongodb_uri, settings.database_name, keys_of, now=utc_now()
    )
    return {"referrals": read, "keys": written}


def main() -> None:
    print(json.dumps(asyncio.run(rekey(ReferralSettings()))))
    sys.exit(0)


if __name__ == "__main__":
    main()
