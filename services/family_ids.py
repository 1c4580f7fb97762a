"""Move existing data to random family ids, in every service's database.

    python -m services.family_ids migrate

Releases before keyed pseudonyms derived a family's id from its eldest child's surname,
date of birth and postcode, so anyone who knew a child could recompute it. Run this once,
with the four services stopped, after the upgrade and after ``python -m
services.referral.rekey`` (which moves the match keys to the secret):

1. every family the referral service knows gets a random id; the plan (old -> new) is
   kept in the referral service's ``family_aliases``, so a run that stopped half way takes
   the same plan up again;
2. each service's records are rewritten to the new ids (the collections each service's
   ``store.FAMILY_ID_FIELDS`` and ``FAMILY_KEYED`` name, and its dead letters), and the
   plan is copied into its own ``family_aliases``;
3. the run is marked done; a second one refuses.

Events already on the topics keep the old ids: Kafka's log is immutable. Every service
reads each event through its ``family_aliases`` (``shared.family_aliases``), so a replay of
a dead letter, a ``make republish`` or a reporting rebuild after the migration finds the
family under its new id, and writes no old id again. Reporting's records name no family.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any

from shared.clock import utc_now
from shared.dead_letters import DEAD_LETTERS
from shared.family_aliases import FAMILY_ALIASES, FamilyAliases, rename_families
from shared.mongo import Database, create_mongo_client
from shared.settings import ServiceSettings

SERVICES = ("referral", "allocation", "audit", "reporting")
MIGRATIONS = "migrations"
MIGRATION_ID = "random-family-ids"


class AlreadyMigrated(RuntimeError):
    """The migration ran to its end before."""


def random_family_id() -> str:
    return f"fam-{secrets.token_hex(10)}"


async def plan(referral: Database) -> dict[str, str]:
    """The plan kept from a run that stopped, else a new id for every known family."""
    kept = {alias["_id"]: alias["family_id"] async for alias in referral[FAMILY_ALIASES].find()}
    if kept:
        return kept
    families = [family["_id"] async for family in referral["families"].find({}, {"_id": 1})]
    renames = {family_id: random_family_id() for family_id in families}
    await FamilyAliases(referral).record(renames, at=utc_now())
    return renames


def where_families_are(service: str) -> tuple[Mapping[str, str], Sequence[str]]:
    """The collections of ``service`` that name a family, by field, and keyed by it."""
    store = import_module(f"services.{service}.store")
    fields: dict[str, str] = {**store.FAMILY_ID_FIELDS, DEAD_LETTERS: "family_id"}
    return fields, tuple(store.FAMILY_KEYED)


async def migrate(settings: ServiceSettings) -> dict[str, Any]:
    client = create_mongo_client(settings.mongodb_uri, app_name="family-id-migration")
    try:
        dbs = {service: client[f"{settings.database_prefix}{service}"] for service in SERVICES}
        done = await dbs["referral"][MIGRATIONS].find_one({"_id": MIGRATION_ID})
        if done is not None:
            raise AlreadyMigrated(f"family ids were migrated at {done['at']}")
        renames = await plan(dbs["referral"])
        for service, db in dbs.items():
            fields, keyed = where_families_are(service)
            await rename_families(db, renames, fields=fields, keyed=keyed)
            if service != "referral":
                await FamilyAliases(db).record(renames, at=utc_now())
        await dbs["referral"][MIGRATIONS].insert_one({"_id": MIGRATION_ID, "at": utc_now()})
    finally:
        await client.close()
    return {"families": len(renames), "services": list(SERVICES)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.family_ids", description=__doc__)
    parser.add_argument("command", choices=["migrate"])
    parser.parse_args(argv)
    try:
        print(json.dumps(asyncio.run(migrate(ServiceSettings()))))
    except AlreadyMigrated as done:
        print(done, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
