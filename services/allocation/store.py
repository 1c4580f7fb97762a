"""MongoDB adapters of the allocation service: the only module that touches the driver.

A district's aggregate is one document of ``districts``: its workers' loads, its queue's
head and bands, and a version. Queued places are documents of ``queue_entries``, one per
case, written only when they change. A save claims the district's next version by inserting
``district:version`` into ``district_versions``, whose unique ``_id`` lets one of two
concurrent saves through: a conditional update alone would not, on a server that lets two
transactions update one document and both commit (SecantusDB's). The partial unique index
on a family's open case stays as the backstop of "one family, one case".

Every look-up on a referral's way is by one field's equality (``_id`` above all), which
MongoDB and SecantusDB both answer from an index; the compound indexes are for MongoDB's
ordered listings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.allocation.domain import (
    HEAD_SIZE,
    AlreadyExists,
    Band,
    BandState,
    Case,
    District,
    QueuePlace,
    Team,
    Worker,
    WorkerLoad,
    caseload_cap,
    place_of,
)
from services.allocation.ports import (
    AllocationStore,
    AllocationUnitOfWork,
    AllocationViews,
    Cases,
    Districts,
    QueueMark,
    Teams,
    Workers,
)
from shared.events import AllocationKind, AllocationStatus, CaseOutcome, LevelOfNeed
from shared.listing import BucketedList, unlisted
from shared.mongo import Database, Document, MongoClient, MongoUnitOfWork, Session, in_transaction
from shared.outbox import Outbox
from shared.unit_of_work import ConcurrentUpdate

TEAMS = "teams"
WORKERS = "workers"
CASES = "cases"
OPEN_CASES = "open_cases"
DISTRICTS = "districts"
DISTRICT_VERSIONS = "district_versions"
QUEUE_ENTRIES = "queue_entries"
LIST_POSITIONS = "case_list_positions"
"""Per list of cases (the county's, and each district's), the next position to hand out."""
COUNTY_LIST = "all"
CASES_A_BUCKET = 100
"""Cases per bucket of a list: a page of cases is a read of a bucket or two by one field's
equality (MongoDB's bucket pattern), whatever the number of cases kept."""

BAND_ORDER = [("referral_received_at", 1), ("_id", 1)]
"""The order of a band's ``queue_entries``, as ``QueuePlace`` orders them."""

FAMILY_ID_FIELDS = {CASES: "family_id"}
"""Where this service's records name a family (``OPEN_CASES`` is keyed by it)."""
FAMILY_KEYED = (OPEN_CASES,)

OPEN = "open"
CLOSED = "closed"

DUPLICATE_KEY = 11000

CLAIMS_KEPT_S = 86_400
"""How long a district's version claim is kept: far longer than any transaction lasts."""


class MongoAllocationStore:
    """The allocation service's database: its indexes, and units of work over it."""

    def __init__(self, client: MongoClient, db: Database, outbox: Outbox) -> None:
        self._client = client
        self._db = db
        self._outbox = outbox

    async def ensure_indexes(self) -> None:
        db = self._db
        # One open (allocated or queued) case per family: "one family, one worker".
        await db[CASES].create_index(
            "family_id",
            unique=True,
            partialFilterExpression={"status": OPEN},
            name="one_open_case_per_family",
        )
        await db[CASES].create_index([("worker_id", 1), ("status", 1)])
        await db[CASES].create_index("list_bucket")
        await db[CASES].create_index("district_bucket")
        await db[WORKERS].create_index("team_id")
        await db[DISTRICT_VERSIONS].create_index(
            "claimed_at", expireAfterSeconds=CLAIMS_KEPT_S, name="claims_expire"
        )
        await db[QUEUE_ENTRIES].create_index("band")
        await db[QUEUE_ENTRIES].create_index("district")
        # A band in its order from any case in it, the case id last, so MongoDB walks it.
        await db[QUEUE_ENTRIES].create_index([("band", 1), *BAND_ORDER], name="band_pages")

    def unit_of_work(self, session: Session | None = None) -> MongoAllocationUnitOfWork:
        return MongoAllocationUnitOfWork(self._client, self._db, self._outbox, session=session)

    def views(self) -> MongoAllocationViews:
        return MongoAllocationViews(self._db)

    async def list_existing_cases(self) -> int:
        """Give cases stored before the lists were kept their places in them, once, oldest
        opened first; how many (0 when the lists exist already, or there are no cases)."""
        db = self._db
        if await db[LIST_POSITIONS].find_one({"_id": COUNTY_LIST}) is not None:
            return 0
        cases = await db[CASES].find({}, {"district": 1, "opened_at": 1}).to_list()
        cases.sort(key=lambda case: (case["opened_at"], _descending(case["_id"])))
        heads: dict[str, int] = {COUNTY_LIST: 0}
        updates = []
        for case in cases:
            district = case["district"]
            county, heads[COUNTY_LIST] = heads[COUNTY_LIST], heads[COUNTY_LIST] + 1
            position, heads[district] = heads.get(district, 0), heads.get(district, 0) + 1
            updates.append(
                UpdateOne({"_id": case["_id"]}, {"$set": list_fields(district, county, position)})
            )
        for start in range(0, len(updates), 1000):
            await db[CASES].bulk_write(updates[start : start + 1000], ordered=False)
        for chain, following in heads.items():
            # $max: a replica listing the same cases at the same moment agrees.
            await db[LIST_POSITIONS].update_one(
                {"_id": chain}, {"$max": {"next": following}}, upsert=True
            )
        return len(cases)

    async def rebuild_districts(self) -> int:
        """Build the district aggregates from the workers and open cases, once, for a
        database written before they were kept; how many were built (0 when they exist
        already)."""
        return await _rebuild_districts(self._client, self._db)


def _store_conforms(store: MongoAllocationStore) -> AllocationStore:
    return store


class MongoAllocationUnitOfWork(MongoUnitOfWork):
    """The allocation repositories over one transaction."""

    districts: Districts
    cases: Cases
    teams: Teams
    workers: Workers

    def opened(self) -> None:
        self.districts = MongoDistricts(self.db, self.session)
        self.cases = MongoCases(self.db, self.session)
        self.teams = MongoTeams(self.db, self.session)
        self.workers = MongoWorkers(self.db, self.session)


def _conforms(uow: MongoAllocationUnitOfWork) -> AllocationUnitOfWork:
    return uow


# ---------------------------------------------------------------------------------------------
# Districts


class MongoDistricts:
    def __init__(self, db: Database, session: Session) -> None:
        self._districts = db[DISTRICTS]
        self._versions = db[DISTRICT_VERSIONS]
        self._entries = db[QUEUE_ENTRIES]
        self._session = session

    async def get_many(self, district_ids: Sequence[str]) -> dict[str, District]:
        found = self._districts.find({"_id": {"$in": list(district_ids)}}, session=self._session)
        districts = {document["_id"]: _district(document) async for document in found}
        return {
            district_id: districts.get(district_id) or District(district_id)
            for district_id in district_ids
        }

    async def get(self, district_id: str) -> District:
        return (await self.get_many([district_id]))[district_id]

    async def band(self, district_id: str, band: Band) -> list[QueuePlace]:
        found = self._entries.find({"band": _band_key(district_id, band)}, session=self._session)
        return sorted([_entry_place(document) async for document in found])

    async def front(self, district: District) -> list[QueuePlace]:
        places: list[QueuePlace] = []
        for band in sorted(district.bands):
            places += await self.band(district.id, band)
            if len(places) >= HEAD_SIZE:
                break
        return places

    async def save(self, district: District) -> None:
        version = district.version + 1
        try:
            # Old claims expire by TTL: no later save can claim a version long past.
            await self._versions.insert_one(
                {"_id": f"{district.id}:{version}", "claimed_at": datetime.now(UTC)},
                session=self._session,
            )
        except DuplicateKeyError as error:
            raise ConcurrentUpdate(f"district {district.id} was saved meanwhile") from error
        await self._districts.replace_one(
            {"_id": district.id}, _district_document(district, version), upsert=True,
            session=self._session,
        )  # fmt: skip
        if district.removed:
            await self._entries.delete_many(
                {"_id": {"$in": sorted(district.removed)}}, session=self._session
            )
        if district.added:
            await self._entries.insert_many(
                [_entry_document(district.id, place) for place in district.added.values()],
                session=self._session,
            )
        district.version = version
        district.added.clear()
        district.removed.clear()

    async def with_queue(self) -> list[str]:
        found = self._districts.find({"queued": {"$gt": 0}}, {"_id": 1}, session=self._session)
        return [document["_id"] async for document in found]


def _band_key(district_id: str, band: Band) -> str:
    return f"{district_id}/{band[0]}/{band[1]}"


def _place_document(place: QueuePlace) -> list[Any]:
    return [place.priority, place.need_rank, place.referral_received_at, place.case_id]


def _place(value: list[Any]) -> QueuePlace:
    return QueuePlace(value[0], value[1], value[2], value[3])


def _entry_document(district_id: str, place: QueuePlace) -> Document:
    return {
        "_id": place.case_id,
        "district": district_id,
        "band": _band_key(district_id, place.band),
        "priority": place.priority,
        "need_rank": place.need_rank,
        "referral_received_at": place.referral_received_at,
    }


def _entry_place(document: Document) -> QueuePlace:
    return QueuePlace(
        document["priority"],
        document["need_rank"],
        document["referral_received_at"],
        document["_id"],
    )


def _district_document(district: District, version: int) -> Document:
    return {
        "_id": district.id,
        "version": version,
        "queued": district.queue_length,
        "workers": {
            worker.id: {
                "team_id": worker.team_id,
                "cap": worker.cap,
                "open_cases": worker.open_cases,
                "active": worker.active,
            }
            for worker in district.workers.values()
        },
        "bands": [
            {
                "priority": band[0],
                "need_rank": band[1],
                "count": state.count,
                "newest": [_place_document(place) for place in state.newest],
            }
            for band, state in sorted(district.bands.items())
        ],
        "head": [_place_document(place) for place in district.head],
    }


def _district(document: Document) -> District:
    return District(
        id=document["_id"],
        version=document["version"],
        workers={
            worker_id: WorkerLoad(
                worker_id, load["team_id"], load["cap"], load["open_cases"], load["active"]
            )
            for worker_id, load in document["workers"].items()
        },
        bands={
            (band["priority"], band["need_rank"]): BandState(
                band["count"], [_place(place) for place in band["newest"]]
            )
            for band in document["bands"]
        },
        head=[_place(place) for place in document["head"]],
    )


# ---------------------------------------------------------------------------------------------
# Cases


class MongoCases:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._cases = db[CASES]
        self._open_cases = db[OPEN_CASES]
        self._db = db
        self._session = session

    async def open_cases_of(self, family_ids: Sequence[str]) -> dict[str, Case]:
        found = self._open_cases.find({"_id": {"$in": list(family_ids)}}, session=self._session)
        case_ids = [document["case_id"] async for document in found]
        return {
            case.family_id: case for case in (await self.get_many(case_ids)).values() if case.open
        }

    async def get(self, case_id: str) -> Case | None:
        document = await self._cases.find_one({"_id": case_id}, session=self._session)
        return None if document is None else case_from(document)

    async def get_many(self, case_ids: Sequence[str]) -> dict[str, Case]:
        if not case_ids:
            return {}
        found = self._cases.find({"_id": {"$in": list(case_ids)}}, session=self._session)
        return {document["_id"]: case_from(document) async for document in found}

    async def open_cases_held_by(self, worker_id: str) -> list[Case]:
        found = self._cases.find({"worker_id": worker_id, "status": OPEN}, session=self._session)
        return [case_from(document) async for document in found]

    async def add(self, cases: Sequence[Case]) -> None:
        if not cases:
            return
        documents = await self._listed(cases)
        try:
            await self._cases.insert_many(documents, session=self._session)
        except BulkWriteError as error:
            if any(failed["code"] != DUPLICATE_KEY for failed in error.details["writeErrors"]):
                raise
            # Another replica opened one of these families' cases first: deciding again
            # joins it.
            raise ConcurrentUpdate("a family's case was opened meanwhile") from error
        await self._open_cases.insert_many(
            [{"_id": case.family_id, "case_id": case.id} for case in cases], session=self._session
        )

    async def _listed(self, cases: Sequence[Case]) -> list[Document]:
        """The cases' documents, each with its positions in the county's list and its
        district's, newest last.

        The positions are handed out outside the transaction, so concurrent batches never
        conflict over them; a batch that is tried again takes new ones, and the ones it
        left are gaps a page steps over.
        """
        counts: dict[str, int] = {COUNTY_LIST: len(cases)}
        for case in cases:
            counts[case.district] = counts.get(case.district, 0) + 1
        firsts = {
            chain: await case_list(None if chain == COUNTY_LIST else chain).take(self._db, count)
            for chain, count in counts.items()
        }
        documents = []
        for case in sorted(cases, key=lambda case: (case.opened_at, _descending(case.id))):
            county, firsts[COUNTY_LIST] = firsts[COUNTY_LIST], firsts[COUNTY_LIST] + 1
            district, firsts[case.district] = firsts[case.district], firsts[case.district] + 1
            documents.append(
                {**case_document(case), **list_fields(case.district, county, district)}
            )
        return documents

    async def save(self, cases: Sequence[Case]) -> None:
        """One bulk write of the cases, and one delete of the closed ones' look-ups."""
        if not cases:
            return
        # $set, not a replacement: a case keeps its places in the lists.
        saved = await self._cases.bulk_write(
            [UpdateOne({"_id": case.id}, {"$set": case_document(case)}) for case in cases],
            ordered=False,
            session=self._session,
        )
        if saved.matched_count != len(cases):
            raise RuntimeError(f"{len(cases) - saved.matched_count} of the cases are not stored")
        closed = [case.family_id for case in cases if not case.open]
        if closed:
            await self._open_cases.delete_many({"_id": {"$in": closed}}, session=self._session)


def case_list(district: str | None) -> BucketedList:
    """The county's list of cases, or a district's."""
    if district is None:
        return BucketedList(COUNTY_LIST, LIST_POSITIONS, per_bucket=CASES_A_BUCKET)
    return BucketedList(
        district, LIST_POSITIONS, "district_position", "district_bucket", CASES_A_BUCKET
    )


def list_fields(district: str, county_position: int, district_position: int) -> Document:
    """Where a case stands in the county's list and its district's."""
    return {
        **case_list(None).fields(county_position),
        **case_list(district).fields(district_position),
    }


LIST_FIELDS = ("list_position", "list_bucket", "district_position", "district_bucket")
UNLISTED = {name: 0 for name in LIST_FIELDS}
"""A case as the views show it: without its places in the lists."""


def _descending(text: str) -> tuple[int, ...]:
    """A key that sorts ``text`` backwards: the newest-first list shows ties by id."""
    return (*(-ord(character) for character in text), 1)


def case_document(case: Case) -> Document:
    return {
        "_id": case.id,
        "family_id": case.family_id,
        "district": case.district,
        "team_id": case.team_id,
        "worker_id": case.worker_id,
        "status": OPEN if case.open else CLOSED,
        "allocation": case.allocation.value,
        "kind": case.kind.value,
        "level_of_need": int(case.level_of_need),
        "referral_received_at": case.referral_received_at,
        "opening_referral_id": case.opening_referral_id,
        "referral_ids": list(case.referral_ids),
        "social_care_case_reference": case.social_care_case_reference,
        "correlation_id": case.correlation_id,
        "opened_at": case.opened_at,
        "allocated_at": case.allocated_at,
        "outcome": None if case.outcome is None else case.outcome.value,
        "closed_at": case.closed_at,
        "version": case.version,
    }


def case_from(document: Document) -> Case:
    return Case(
        id=document["_id"],
        family_id=document["family_id"],
        district=document["district"],
        kind=AllocationKind(document["kind"]),
        level_of_need=LevelOfNeed(document["level_of_need"]),
        referral_received_at=document["referral_received_at"],
        opening_referral_id=document["opening_referral_id"],
        referral_ids=tuple(document["referral_ids"]),
        correlation_id=document["correlation_id"],
        opened_at=document["opened_at"],
        social_care_case_reference=document.get("social_care_case_reference"),
        team_id=document.get("team_id"),
        worker_id=document.get("worker_id"),
        allocation=AllocationStatus(document["allocation"]),
        allocated_at=document.get("allocated_at"),
        open=document["status"] == OPEN,
        outcome=None if document.get("outcome") is None else CaseOutcome(document["outcome"]),
        closed_at=document.get("closed_at"),
        version=document["version"],
    )


# ---------------------------------------------------------------------------------------------
# Teams and workers


class MongoTeams:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._teams = db[TEAMS]
        self._session = session

    async def get(self, team_id: str) -> Team | None:
        document = await self._teams.find_one({"_id": team_id}, session=self._session)
        return None if document is None else _team(document)

    async def add(self, team: Team) -> None:
        try:
            await self._teams.insert_one(_team_document(team), session=self._session)
        except DuplicateKeyError:
            raise AlreadyExists(f"team {team.id} already exists") from None

    async def save(self, team: Team) -> None:
        await self._teams.replace_one({"_id": team.id}, _team_document(team), session=self._session)

    async def any(self) -> bool:
        return await self._teams.find_one({}, {"_id": 1}, session=self._session) is not None


def _team_document(team: Team) -> Document:
    return {
        "_id": team.id,
        "name": team.name,
        "district": team.district,
        "cap_per_fte": team.cap_per_fte,
        "capacity_version": team.capacity_version,
    }


def _team(document: Document) -> Team:
    return Team(
        document["_id"],
        document["name"],
        document["district"],
        document["cap_per_fte"],
        document.get("capacity_version", 0),
    )


class MongoWorkers:
    def __init__(self, db: Database, session: Session | None) -> None:
        self._workers = db[WORKERS]
        self._session = session

    async def get(self, worker_id: str) -> Worker | None:
        document = await self._workers.find_one({"_id": worker_id}, session=self._session)
        return None if document is None else _worker(document)

    async def of_team(self, team_id: str) -> list[Worker]:
        found = self._workers.find({"team_id": team_id}, session=self._session)
        return [_worker(document) async for document in found]

    async def add(self, worker: Worker) -> None:
        try:
            await self._workers.insert_one(_worker_document(worker), session=self._session)
        except DuplicateKeyError:
            raise AlreadyExists(f"worker {worker.id} already exists") from None

    async def save(self, worker: Worker) -> None:
        await self._workers.replace_one(
            {"_id": worker.id}, _worker_document(worker), session=self._session
        )


def _worker_document(worker: Worker) -> Document:
    return {
        "_id": worker.id,
        "name": worker.name,
        "team_id": worker.team_id,
        "district": worker.district,
        "fte": worker.fte,
        "cap_override": worker.cap_override,
        "active": worker.active,
        "joined_at": worker.joined_at,
        "left_at": worker.left_at,
    }


def _worker(document: Document) -> Worker:
    return Worker(
        id=document["_id"],
        name=document["name"],
        team_id=document["team_id"],
        district=document["district"],
        fte=document["fte"],
        cap_override=document.get("cap_override"),
        active=document["active"],
        joined_at=document["joined_at"],
        left_at=document.get("left_at"),
    )


# ---------------------------------------------------------------------------------------------
# What managers read


class MongoAllocationViews:
    """Teams, workers, the queue and cases as the HTTP answers show them, outside any
    transaction: a manager's view may lag a decision by a moment, never mix two."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_teams(self, district: str | None = None) -> list[Document]:
        query = {} if district is None else {"district": district}
        teams = await self._db[TEAMS].find(query).sort([("district", 1), ("_id", 1)]).to_list()
        workers = (
            await self._db[WORKERS]
            .find({"team_id": {"$in": [team["_id"] for team in teams]}})
            .to_list()
        )
        loads = await self._loads(sorted({team["district"] for team in teams}))
        return [_team_view(team, workers, loads) for team in teams]

    async def get_team(self, team_id: str) -> Document | None:
        team = await self._db[TEAMS].find_one({"_id": team_id})
        if team is None:
            return None
        workers = await self._db[WORKERS].find({"team_id": team_id}).to_list()
        return _team_view(team, workers, await self._loads([team["district"]]))

    async def get_worker(self, worker_id: str) -> Document | None:
        worker = await self._db[WORKERS].find_one({"_id": worker_id})
        if worker is None:
            return None
        loads = await self._loads([worker["district"]])
        cases = (
            await self._db[CASES]
            .find({"worker_id": worker_id, "status": OPEN}, projection=["_id"])
            .to_list()
        )
        return {**_worker_view(worker, loads), "case_ids": sorted(case["_id"] for case in cases)}

    async def queue(
        self,
        district: str | None = None,
        *,
        limit: int | None = None,
        after: QueueMark | None = None,
    ) -> tuple[list[Document], QueueMark | None]:
        """A district's bands in turn, each read by the band's equality: MongoDB walks the
        ``band_pages`` index from the mark; a server that scans ranges reads the band."""
        query: Document = {"queued": {"$gt": 0}} if district is None else {"_id": district}
        if after is not None:
            query = {"$and": [query, {"_id": {"$gte": after.district}}]}
        districts = await self._db[DISTRICTS].find(query, {"bands": 1}).sort("_id", 1).to_list()
        marks: list[QueueMark] = []
        for document in districts:
            number = 0
            if after is not None and document["_id"] == after.district:
                number = after.number
            for band in document["bands"]:
                key = (band["priority"], band["need_rank"])
                in_band: dict[str, Any] = {"band": _band_key(document["_id"], key)}
                mark: QueuePlace | None = None
                if after is not None and document["_id"] == after.district:
                    if key < after.place.band:
                        continue
                    if key == after.place.band:
                        # A range on the time after the band's equality, the ties on it
                        # stepped over here: an $or would be a scan on many servers.
                        mark = after.place
                        in_band["referral_received_at"] = {"$gte": mark.referral_received_at}
                if not band["count"]:
                    continue
                found = self._db[QUEUE_ENTRIES].find(in_band).sort(BAND_ORDER)
                if limit is not None:
                    found = found.batch_size(limit - len(marks) + 2)
                    if mark is None:
                        found = found.limit(limit - len(marks) + 1)
                async for entry in found:
                    place = _entry_place(entry)
                    if mark is not None and place <= mark:
                        continue
                    if limit is not None and len(marks) == limit:
                        await found.close()
                        return await self._queued(marks), marks[-1]
                    number += 1
                    marks.append(QueueMark(document["_id"], place, number))
        return await self._queued(marks), None

    async def _queued(self, marks: Sequence[QueueMark]) -> list[Document]:
        """The cases at ``marks``, each with its place number."""
        found = self._db[CASES].find(
            {"_id": {"$in": [mark.place.case_id for mark in marks]}}, UNLISTED
        )
        cases = {case["_id"]: case async for case in found}
        return [{**cases[mark.place.case_id], "place": mark.number} for mark in marks]

    async def list_cases(
        self, filters: dict[str, Any], limit: int, *, before: int | None = None
    ) -> tuple[list[Document], int | None]:
        """Newest first, from position ``before`` down (the newest when None), a bucket at
        a time; the position to go on from, or None at the end of the list. A family's
        cases are few and read by its id alone."""
        cases = self._db[CASES]
        if "family_id" in filters:
            found = await cases.find(filters).to_list()
            found.sort(key=lambda case: (case.get("list_position", -1), case["opened_at"]))
            return [unlisted(case, LIST_FIELDS) for case in found[::-1][:limit]], None
        district = filters.get("district")
        rest = {name: value for name, value in filters.items() if name != "district"}
        page, following = await case_list(district).page(
            self._db,
            CASES,
            limit,
            before=before,
            keep=lambda case: all(case.get(name) == value for name, value in rest.items()),
        )
        return [unlisted(case, LIST_FIELDS) for case in page], following

    async def get_case(self, case_id: str) -> Document | None:
        return await self._db[CASES].find_one({"_id": case_id}, UNLISTED)

    async def _loads(self, district_ids: Sequence[str]) -> dict[str, WorkerLoad]:
        found = self._db[DISTRICTS].find({"_id": {"$in": list(district_ids)}})
        loads: dict[str, WorkerLoad] = {}
        async for document in found:
            loads.update(_district(document).workers)
        return loads

    async def count_teams(self) -> int:
        return await self._db[TEAMS].count_documents({})


def _views_conform(views: MongoAllocationViews) -> AllocationViews:
    return views


def _worker_view(worker: Document, loads: dict[str, WorkerLoad]) -> Document:
    load = loads.get(worker["_id"]) or WorkerLoad(worker["_id"], worker["team_id"], 0)
    return {
        "id": worker["_id"],
        "name": worker["name"],
        "team_id": worker["team_id"],
        "district": worker["district"],
        "fte": worker["fte"],
        "caseload_cap": load.cap,
        "cap_is_own": worker.get("cap_override") is not None,
        "open_cases": load.open_cases,
        "spare": max(0, load.spare) if worker["active"] else 0,
        "active": worker["active"],
    }


def _team_view(team: Document, workers: list[Document], loads: dict[str, WorkerLoad]) -> Document:
    members = sorted(
        (_worker_view(worker, loads) for worker in workers if worker["team_id"] == team["_id"]),
        key=lambda worker: (not worker["active"], worker["id"]),
    )
    current = [worker for worker in members if worker["active"]]
    return {
        "id": team["_id"],
        "name": team["name"],
        "district": team["district"],
        "cap_per_fte": team["cap_per_fte"],
        "fte": round(sum(worker["fte"] for worker in current), 2),
        "capacity": sum(worker["caseload_cap"] for worker in current),
        "open_cases": sum(worker["open_cases"] for worker in current),
        "workers": members,
    }


# ---------------------------------------------------------------------------------------------
# Databases written before districts were kept


async def _rebuild_districts(client: MongoClient, db: Database) -> int:
    if await db[DISTRICTS].find_one({}, {"_id": 1}) is not None:
        return 0
    workers = await db[WORKERS].find({}).to_list()
    if not workers:
        return 0
    teams = {team["_id"]: team async for team in db[TEAMS].find({})}
    open_cases = await db[CASES].find({"status": OPEN}).to_list()
    districts: dict[str, District] = {}
    for worker in workers:
        team = teams[worker["team_id"]]
        district = districts.setdefault(team["district"], District(team["district"]))
        district.workers[worker["_id"]] = WorkerLoad(
            worker["_id"],
            worker["team_id"],
            caseload_cap(worker["fte"], team["cap_per_fte"], worker.get("cap_override")),
            active=worker["active"],
        )
    for document in sorted(open_cases, key=lambda document: place_of(case_from(document))):
        case = case_from(document)
        district = districts.setdefault(case.district, District(case.district))
        if case.allocation is AllocationStatus.QUEUED:
            district.enqueue(place_of(case))
        elif case.worker_id in district.workers:
            district.workers[case.worker_id].open_cases += 1

    async def save(session: Session) -> None:
        await db[QUEUE_ENTRIES].delete_many({}, session=session)
        for district in districts.values():
            await MongoDistricts(db, session).save(district)

    try:
        await in_transaction(client, save)
    except ConcurrentUpdate:
        return 0  # another replica, starting at the same moment, built them
    return len(districts)
