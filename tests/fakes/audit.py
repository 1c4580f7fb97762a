"""In-memory fakes of the audit service's ports, held to ``MongoAuditStore`` by
``tests/contract/test_audit_store.py``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.audit.domain import (
    Audit,
    Auditor,
    AuditStatus,
    CaseState,
    DrawRecord,
    DrawRound,
    audit_status,
)
from services.audit.ports import AuditNotOpen, AuditPlace
from shared.unit_of_work import ConcurrentUpdate
from tests.fakes.units import InMemoryStore, InMemoryUnitOfWork


@dataclass
class AuditState:
    """The audit service's collections, each by its documents' id."""

    cases: dict[str, CaseState] = field(default_factory=dict)
    auditors: dict[str, Auditor] = field(default_factory=dict)
    audits: dict[str, Audit] = field(default_factory=dict)
    draws: dict[str, DrawRecord] = field(default_factory=dict)


class InMemoryCases:
    def __init__(self, cases: dict[str, CaseState]) -> None:
        self._cases = cases

    async def get_many(self, case_ids: Collection[str]) -> dict[str, CaseState]:
        return {case_id: self._cases[case_id] for case_id in case_ids if case_id in self._cases}

    async def save_many(self, cases: Sequence[CaseState]) -> None:
        self._cases.update({case.case_id: case for case in cases})

    async def allocated_before(self, at: datetime) -> list[CaseState]:
        return [
            case
            for case in self._cases.values()
            if case.first_allocated_at is not None and case.first_allocated_at < at
        ]


class InMemoryAuditors:
    def __init__(self, auditors: dict[str, Auditor]) -> None:
        self._auditors = auditors

    async def all(self) -> list[Auditor]:
        return [self._auditors[auditor_id] for auditor_id in sorted(self._auditors)]

    async def get(self, auditor_id: str) -> Auditor | None:
        return self._auditors.get(auditor_id)

    async def add(self, auditor: Auditor, *, now: datetime) -> bool:
        if auditor.id in self._auditors:
            return False
        self._auditors[auditor.id] = auditor
        return True

    async def save(self, auditor: Auditor, *, now: datetime) -> None:
        if auditor.id in self._auditors:
            self._auditors[auditor.id] = auditor

    async def count(self) -> int:
        return len(self._auditors)


class InMemoryAudits:
    def __init__(self, audits: dict[str, Audit]) -> None:
        self._audits = audits

    async def get(self, audit_id: str) -> Audit | None:
        return self._audits.get(audit_id)

    async def of_month(self, month: str) -> list[Audit]:
        return [audit for audit in self._audits.values() if audit.month == month]

    async def find(
        self,
        *,
        month: str | None,
        auditor_id: str | None,
        status: AuditStatus | None,
        now: datetime,
        limit: int,
        after: AuditPlace | None = None,
    ) -> tuple[list[Audit], AuditPlace | None]:
        found = [
            audit
            for audit in self._audits.values()
            if month in (None, audit.month)
            and auditor_id in (None, audit.auditor_id)
            and status in (None, audit_status(audit.record, now))
        ]
        found.sort(key=lambda audit: (audit.auditor_id, audit.id))
        found.sort(key=lambda audit: audit.month, reverse=True)
        if after is not None:
            found = [
                audit
                for audit in found
                if audit.month < after[0]
                or (audit.month == after[0] and (audit.auditor_id, audit.id) > after[1:])
            ]
        if len(found) <= limit:
            return found, None
        last = found[limit - 1]
        return found[:limit], (last.month, last.auditor_id, last.id)

    async def assigned_per_auditor(self, month: str) -> dict[str, int]:
        return dict(Counter(audit.auditor_id for audit in await self.of_month(month)))

    async def cases_drawn(self, months: Sequence[str]) -> set[str]:
        return {audit.case_id for audit in self._audits.values() if audit.month in months}

    async def add(self, audits: Sequence[Audit]) -> None:
        self._audits.update({audit.id: audit for audit in audits})

    async def complete(self, audit: Audit) -> None:
        stored = self._audits.get(audit.id)
        if stored is None or stored.completed_at is not None:
            raise AuditNotOpen(audit.id)
        self._audits[audit.id] = replace(
            stored,
            scores=dict(audit.scores),
            overall_grade=audit.overall_grade,
            overall_grade_given=audit.overall_grade_given,
            learning_points=list(audit.learning_points),
            completed_at=audit.completed_at,
        )


class InMemoryDraws:
    def __init__(self, draws: dict[str, DrawRecord]) -> None:
        self._draws = draws

    async def get(self, month: str) -> DrawRecord | None:
        return self._draws.get(month)

    async def newest_first(self) -> list[DrawRecord]:
        return [self._draws[month] for month in sorted(self._draws, reverse=True)]

    async def add_round(self, month: str, round_: DrawRound) -> DrawRecord:
        drawn = self._draws.get(month) or DrawRecord(month, round_.seed, round_.at)
        self._draws[month] = replace(drawn, rounds=[*drawn.rounds, round_])
        return self._draws[month]


class InMemoryAuditUnitOfWork(InMemoryUnitOfWork[AuditState]):
    store: InMemoryAuditStore

    def __init__(self, store: InMemoryAuditStore) -> None:
        super().__init__(store)
        self.store = store

    def opened(self) -> None:
        self.cases = InMemoryCases(self.state.cases)
        self.auditors = InMemoryAuditors(self.state.auditors)
        self.audits = InMemoryAudits(self.state.audits)
        self.draws = InMemoryDraws(self.state.draws)

    async def commit(self) -> None:
        while self.store.meanwhile:
            await self.store.meanwhile.pop(0)()
        await super().commit()


class InMemoryAuditStore(InMemoryStore[AuditState]):
    """The audit service's data in memory.

    As in the database's transactions, two units of work that wrote one record (a month's
    draw, an audit, an auditor, a case) cannot both commit: the later one fails with
    ``ConcurrentUpdate``. ``meanwhile`` holds work another writer commits just before the
    next commit, so a test can put a concurrent writer between a read and a commit.
    """

    def __init__(self) -> None:
        super().__init__(AuditState())
        self.meanwhile: list[Callable[[], Awaitable[object]]] = []

    async def ensure_indexes(self) -> None:
        """Nothing to index: every look-up here is by a dictionary's key or a scan."""

    def unit_of_work(self, session: Any = None) -> InMemoryAuditUnitOfWork:
        if session is not None:
            raise ValueError("the in-memory store has no consumer's transaction to join")
        return InMemoryAuditUnitOfWork(self)

    def check(self, read: AuditState, mine: AuditState) -> None:
        for name in ("cases", "auditors", "audits", "draws"):
            before = getattr(read, name)
            clashes = _changed(before, getattr(self.state, name)) & _changed(
                before, getattr(mine, name)
            )
            if clashes:
                raise ConcurrentUpdate(f"{name} {sorted(clashes)} were written meanwhile")


def _changed(before: Mapping[str, object], after: Mapping[str, object]) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
