"""HTTP submissions that arrive together are received in one transaction, each answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from services.referral.domain import referral_id_for
from services.referral.handlers import FrontDoor, Origin, Rejected
from services.referral.handlers.grouped import GroupedReceipts
from services.referral.ports import Accepted, Lookups, Submissions
from tests.factories import MATCH_KEYS
from tests.fakes.referral import InMemoryReferralStore

T = TypeVar("T")

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"


class CountedStore(InMemoryReferralStore):
    """Counts the batches (transactions) the submissions came in, and can fail the next."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail_next_batch = False

    async def in_batch(
        self, lookups: Sequence[Lookups], work: Callable[[Submissions], Awaitable[T]]
    ) -> T:
        if self.fail_next_batch:
            self.fail_next_batch = False
            raise RuntimeError("the batch failed")
        self.batches.append(len(lookups))
        return await super().in_batch(lookups, work)


def body(number: int, **changes: Any) -> bytes:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    document["submission_id"] = f"np-2026-{number:04d}"
    document.update(changes)
    return json.dumps(document).encode()


def origin(number: int) -> Origin:
    return Origin("/http", f"request-{number}", f"corr-{number}")


def receipts(store: CountedStore) -> GroupedReceipts:
    return GroupedReceipts(
        store, front_door=FrontDoor.sample(MATCH_KEYS), clock=lambda: NOW, max_bytes=1_000_000
    )


async def test_requests_arriving_together_share_a_transaction_and_each_gets_its_answer() -> None:
    store = CountedStore()
    intake = receipts(store)

    outcomes = await asyncio.gather(*(intake.receive(body(n), origin(n)) for n in range(20)))

    assert [type(outcome) for outcome in outcomes] == [Accepted] * 20
    assert [outcome.referral_id for outcome in outcomes if isinstance(outcome, Accepted)] == [
        referral_id_for("northvale-primary", f"np-2026-{n:04d}") for n in range(20)
    ]
    assert store.batches == [20]
    assert len(store.received) == 20


async def test_a_lone_request_waits_for_no_other() -> None:
    store = CountedStore()
    intake = receipts(store)

    first = await intake.receive(body(1), origin(1))
    second = await intake.receive(body(2), origin(2))

    assert [type(first), type(second)] == [Accepted, Accepted]
    assert store.batches == [1, 1]


async def test_an_invalid_request_in_a_batch_is_rejected_with_its_reasons_alone() -> None:
    store = CountedStore()
    intake = receipts(store)

    outcomes = await asyncio.gather(
        intake.receive(body(1), origin(1)),
        intake.receive(body(2, route="no-such-route"), origin(2)),
        intake.receive(b"{not json", origin(3)),
        intake.receive(body(4), origin(4)),
    )

    assert [type(outcome) for outcome in outcomes] == [Accepted, Rejected, Rejected, Accepted]
    second, third = outcomes[1], outcomes[2]
    assert isinstance(second, Rejected)
    assert isinstance(third, Rejected)
    assert [reason.field for reason in second.reasons] == ["route"]
    assert [reason.code for reason in third.reasons] == ["unreadable"]
    assert len(store.received) == 2
    assert len(store.rejected) == 2


async def test_a_batch_that_fails_is_received_again_one_request_at_a_time() -> None:
    store = CountedStore()
    intake = receipts(store)
    store.fail_next_batch = True

    outcomes = await asyncio.gather(*(intake.receive(body(n), origin(n)) for n in range(3)))

    assert [type(outcome) for outcome in outcomes] == [Accepted] * 3
    assert len(store.received) == 3


async def test_a_caller_that_goes_away_leaves_the_others_answered() -> None:
    store = CountedStore()
    intake = receipts(store)
    first = asyncio.ensure_future(intake.receive(body(1), origin(1)))
    others = [asyncio.ensure_future(intake.receive(body(n), origin(n))) for n in (2, 3)]
    await asyncio.sleep(0)
    others[0].cancel()

    answered = await asyncio.gather(first, others[1])

    assert [type(outcome) for outcome in answered] == [Accepted, Accepted]
    # The request whose caller went away was received all the same: a resend is a duplicate.
    assert len(store.received) == 3
