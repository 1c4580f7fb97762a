"""MongoDB adapter of the reporting read models: the only module that touches the driver."""

from __future__ import annotations

from typing import Any

from services.reporting.domain import FigureChange
from shared.mongo import Database, Document, Session

MONTHLY_FIGURES = "monthly_figures"


class MongoFiguresStore:
    def __init__(self, db: Database) -> None:
        self._figures = db[MONTHLY_FIGURES]

    async def ensure_indexes(self) -> None:
        await self._figures.create_index([("month", 1), ("district", 1)], unique=True)

    async def apply(self, change: FigureChange, *, session: Session) -> None:
        await self._figures.update_one(
            {"_id": f"{change.month}|{change.district}"},
            {
                "$setOnInsert": {"month": change.month, "district": change.district},
                "$inc": {f"counts.{name}": value for name, value in change.increments.items()},
            },
            upsert=True,
            session=session,
        )

    async def all_figures(self, filters: dict[str, Any]) -> list[Document]:
        return (
            await self._figures.find(filters, {"_id": 0})
            .sort([("month", 1), ("district", 1)])
            .to_list()
        )
