"""The operators' erasure command: the same use case as ``POST /families/{id}/erasure``,
recorded in the access log under the ``operator`` role.

    python -m services.referral.erasure FAMILY_ID --reason "..." [--by NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict

from services.referral.domain import Conflict, NotFound
from services.referral.handlers.erasure import erase_family
from services.referral.settings import ReferralSettings, match_keys_of
from services.referral.store import connected
from shared.clock import utc_now


async def _main(family_id: str, reason: str, by: str) -> int:
    settings = ReferralSettings()
    async with connected(
        settings.mongodb_uri,
        settings.database_name,
        app_name="referral-erasure",
        topic_namespace=settings.topic_namespace,
    ) as unit_of_work:
        try:
            erased = await erase_family(
                unit_of_work(),
                family_id,
                by=by,
                role="operator",
                reason=reason,
                now=utc_now(),
                match_keys=match_keys_of(settings),
            )
        except (NotFound, Conflict) as refused:
            print(refused)
            return 1
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
