"""The district aggregate without any server: placement rules, the queue's order, caps,
a leaver and a capacity change, and a long queue kept exactly without being held whole."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.allocation import domain
from services.allocation.domain import (
    BAND_WINDOW,
    HEAD_SIZE,
    BandNeeded,
    Case,
    District,
    QueuePlace,
    place_of,
)
from shared.events import AllocationKind, AllocationStatus, CaseOutcome, LevelOfNeed
from tests.factories import referral_received

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
DISTRICT = "northvale"


def referral(family: str, *, minutes: int = 0, **changes: Any) -> Any:
    return referral_received(
        **{
            "family_id": family,
            "referral_id": f"ref-{family}-{minutes}",
            "district": DISTRICT,
            "level_of_need": LevelOfNeed.EARLY_HELP_MULTI_AGENCY,
            "received_at": NOW + timedelta(minutes=minutes),
            **changes,
        }
    )


def district_with(**caps: int) -> District:
    district = District(DISTRICT)
    for worker_id, cap in caps.items():
        district.join(worker_id, "northvale-north", cap)
    return district


def place(district: District, *referrals: Any, open_cases: dict[str, Case] | None = None) -> Any:
    return domain.place_referrals(
        [(referral, "corr") for referral in referrals], open_cases or {}, {DISTRICT: district}, NOW
    )


def test_a_new_family_goes_to_the_worker_with_the_most_spare_capacity() -> None:
    district = district_with(amara=3, ben=5)
    district.workers["ben"].open_cases = 1

    [allocated] = place(district, referral("fam-1")).allocations

    assert (allocated.worker_id, allocated.status) == ("ben", AllocationStatus.ALLOCATED)
    assert district.workers["ben"].open_cases == 2
    assert allocated.queue_position is None


def test_equal_spare_capacity_goes_to_the_lowest_worker_id() -> None:
    district = district_with(cara=2, amara=2)

    [allocated] = place(district, referral("fam-1")).allocations

    assert allocated.worker_id == "amara"


def test_a_family_with_an_open_case_keeps_its_case_and_worker() -> None:
    district = district_with(amara=1, ben=5)
    first = place(district, referral("fam-1", minutes=0))
    [case] = first.opened

    second = place(district, referral("fam-1", minutes=5), open_cases={"fam-1": case})

    [joined] = second.allocations
    assert joined.kind is AllocationKind.EXISTING_CASE
    assert (joined.case_id, joined.worker_id) == (case.id, case.worker_id)
    assert second.joined[case.id].referral_ids == (*case.referral_ids, "ref-fam-1-5")
    assert second.joined[case.id].version == case.version + 1
    assert district.workers[case.worker_id or ""].open_cases == 1


def test_a_familys_second_referral_in_the_same_batch_joins_the_case_the_first_opened() -> None:
    district = district_with(amara=5)

    placement = place(district, referral("fam-1", minutes=0), referral("fam-1", minutes=1))

    [opened] = placement.opened
    assert [event.case_id for event in placement.allocations] == [opened.id, opened.id]
    assert opened.referral_ids == ("ref-fam-1-0", "ref-fam-1-1")
    assert not placement.joined
    assert district.workers["amara"].open_cases == 1


def test_step_downs_and_social_care_families_are_placed_by_their_own_rules() -> None:
    district = district_with(amara=5)

    step_down, co_working = place(
        district,
        referral("fam-1", is_step_down=True, social_care_case_reference="CSC-1"),
        referral("fam-2", open_to_social_care=True, social_care_case_reference="CSC-2"),
    ).allocations

    assert step_down.kind is AllocationKind.STEP_DOWN
    assert co_working.kind is AllocationKind.CO_WORKING
    assert co_working.social_care_case_reference == "CSC-2"


def test_the_last_place_under_a_cap_is_taken_and_then_cases_queue() -> None:
    district = district_with(amara=2)
    district.workers["amara"].open_cases = 1

    last, queued = place(district, referral("fam-1"), referral("fam-2", minutes=1)).allocations

    assert last.worker_id == "amara"
    assert (queued.status, queued.worker_id, queued.queue_position) == (
        AllocationStatus.QUEUED,
        None,
        1,
    )
    assert district.workers["amara"].spare == 0
    assert district.queue_length == 1


def test_nobody_jumps_the_queue_even_when_a_place_is_free() -> None:
    district = district_with(amara=0)
    place(district, referral("fam-1"))
    district.change_cap("amara", 1)

    [late] = place(district, referral("fam-2", minutes=1)).allocations

    assert late.status is AllocationStatus.QUEUED
    assert late.queue_position == 2
    assert [allocation.case_id for allocation in district.allocate_queue()] == [
        domain.case_id_for("ref-fam-1-0")
    ]


def test_the_queue_takes_step_downs_first_then_higher_need_then_the_oldest() -> None:
    district = district_with(amara=0)
    arrivals = [
        referral("standard-2-early", minutes=0, level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY),
        referral("standard-3-late", minutes=9),
        referral("step-down-2-late", minutes=8, is_step_down=True,
                 level_of_need=LevelOfNeed.EARLY_HELP_SINGLE_AGENCY),
        referral("standard-3-early", minutes=1),
        referral("step-down-3-late", minutes=7, is_step_down=True),
    ]  # fmt: skip
    placement = place(district, *arrivals)

    assert [event.queue_position for event in placement.allocations] == [1, 1, 1, 2, 1]
    district.change_cap("amara", 5)
    order = [allocation.case_id for allocation in district.allocate_queue()]
    assert order == [
        domain.case_id_for(f"ref-{family}")
        for family in (
            "step-down-3-late-7",
            "step-down-2-late-8",
            "standard-3-early-1",
            "standard-3-late-9",
            "standard-2-early-0",
        )
    ]
    assert district.queue_length == 0
    assert district.workers["amara"].open_cases == 5


def test_a_cap_cut_below_the_caseload_takes_no_new_case_until_cases_close() -> None:
    district = district_with(amara=3)
    placement = place(district, *(referral(f"fam-{n}", minutes=n) for n in range(3)))
    district.change_cap("amara", 1)

    [queued] = place(district, referral("fam-9", minutes=9)).allocations
    assert queued.status is AllocationStatus.QUEUED
    assert district.workers["amara"].spare == -2

    for case in placement.opened[:2]:
        domain.release(district, case)
    assert district.allocate_queue() == []
    domain.release(district, placement.opened[2])
    [allocation] = district.allocate_queue()
    assert allocation.case_id == queued.case_id


def test_closing_a_case_frees_its_place_or_its_queue_entry_once() -> None:
    district = district_with(amara=1)
    held, waiting = place(district, referral("fam-1"), referral("fam-2", minutes=1)).opened

    closed, event = domain.close_case(waiting, CaseOutcome.NEEDS_MET, NOW)
    domain.release(district, waiting)

    assert (closed.open, event.outcome) == (False, CaseOutcome.NEEDS_MET)
    assert district.queue_length == 0
    assert district.head == []
    with pytest.raises(domain.CaseNotOpen):
        domain.close_case(closed, CaseOutcome.NEEDS_MET, NOW)
    domain.release(district, held)
    assert district.workers["amara"].open_cases == 0


def test_a_leavers_cases_go_to_the_most_spare_worker_then_back_to_the_queue_in_place() -> None:
    district = district_with(amara=3, ben=1)
    placement = place(district, *(referral(f"fam-{n}", minutes=n) for n in range(4)))
    amaras = [case for case in placement.opened if case.worker_id == "amara"]
    assert len(amaras) == 3

    moved = domain.worker_leaves(district, "amara", amaras, NOW)

    assert [event.reallocated_from_worker_id for _, event in moved] == ["amara"] * 3
    assert [event.status for _, event in moved].count(AllocationStatus.QUEUED) == 3
    assert district.workers["amara"].active is False
    assert district.workers["amara"].spare == 0
    assert district.queue_length == 3
    queued_in_order = sorted(place_of(case) for case, _ in moved)
    assert district.head == queued_in_order
    assert domain.worker_leaves(district, "amara", [case for case, _ in moved], NOW) == []


def test_a_leavers_case_goes_to_a_colleague_with_room() -> None:
    district = district_with(amara=1, ben=2)
    [case] = place(district, referral("fam-1")).opened
    assert case.worker_id == "ben"

    [(moved, event)] = domain.worker_leaves(district, "ben", [case], NOW)

    assert (moved.worker_id, event.status, event.reallocated_from_worker_id) == (
        "amara",
        AllocationStatus.ALLOCATED,
        "ben",
    )
    assert moved.version == case.version + 1
    assert district.workers["amara"].open_cases == 1


def test_more_capacity_takes_the_queue_in_order_and_no_more_than_the_new_places() -> None:
    district = district_with(amara=0)
    place(district, *(referral(f"fam-{n}", minutes=n) for n in range(5)))

    district.change_cap("amara", 2)
    first = district.allocate_queue()
    district.join("ben", "northvale-south", 1)
    second = district.allocate_queue()

    assert [a.case_id for a in first + second] == [
        domain.case_id_for(f"ref-fam-{n}-{n}") for n in range(3)
    ]
    assert [a.worker_id for a in first + second] == ["amara", "amara", "ben"]
    assert district.queue_length == 2


class SavedQueue:
    """What a store would keep of a district's queue entries: every place, by case id."""

    def __init__(self) -> None:
        self.places: dict[str, QueuePlace] = {}

    def save(self, district: District) -> District:
        for case_id in district.removed:
            self.places.pop(case_id, None)
        self.places.update(district.added)
        district.added.clear()
        district.removed.clear()
        return replace_district(district)

    def band(self, band: tuple[int, int]) -> list[QueuePlace]:
        return sorted(place for place in self.places.values() if place.band == band)


def replace_district(district: District) -> District:
    """A fresh copy, as loading it again would give."""
    return District(
        district.id,
        {worker_id: replace(worker) for worker_id, worker in district.workers.items()},
        {band: replace(state, newest=list(state.newest)) for band, state in district.bands.items()},
        list(district.head),
        district.version,
    )


def test_a_long_queue_keeps_every_position_exact_without_holding_it_whole() -> None:
    """Thousands queued, arriving out of order as partitions and batches interleave: each
    position matches the whole queue's order, and draining gives that order exactly."""
    rng = random.Random(7)
    saved = SavedQueue()
    district = district_with(amara=0)
    queue: list[QueuePlace] = []
    bands_read = 0
    for batch in range(60):
        arrivals = []
        for n in range(50):
            minutes = batch * 50 + n + rng.randint(-120, 10)
            if rng.random() < 0.01:
                minutes -= 2000  # now and then, a very late arrival
            level = rng.choice(
                [LevelOfNeed.EARLY_HELP_SINGLE_AGENCY, LevelOfNeed.EARLY_HELP_MULTI_AGENCY]
            )
            arrivals.append(
                referral(f"fam-{batch}-{n}", minutes=minutes, level_of_need=level,
                         is_step_down=rng.random() < 0.05)
            )  # fmt: skip
        for arrival in arrivals:
            try:
                [event] = place(district, arrival).allocations
            except BandNeeded as needed:
                bands_read += 1
                district.know_band(needed.band, saved.band(needed.band))
                [event] = place(district, arrival).allocations
            new = QueuePlace(
                domain.queue_priority(event.kind),
                -int(event.level_of_need),
                domain.to_millisecond(event.referral_received_at),
                event.case_id,
            )
            queue.append(new)
            queue.sort()
            assert event.queue_position == queue.index(new) + 1
        district = saved.save(district)
        assert district.queue_length == len(queue)
        assert district.head == queue[:HEAD_SIZE]

    assert len(queue) == 3000
    assert 0 < bands_read < 100, "late arrivals, and only they, read their band"
    assert all(len(state.newest) <= BAND_WINDOW for state in district.bands.values())

    district.change_cap("amara", len(queue))
    drained: list[str] = []
    while district.queue_length:
        if district.needs_head():
            front: list[QueuePlace] = []
            for band in sorted(district.bands):
                front += saved.band(band)
            district.know_front(front)
        step = district.allocate_queue()
        assert step, "a free place and a queue always allocate"
        drained += [allocation.case_id for allocation in step]
        district = saved.save(district)
    assert drained == [place.case_id for place in queue]
    assert saved.places == {}


def test_a_place_older_than_the_bands_newest_asks_for_the_band_before_changing_anything() -> None:
    district = district_with(amara=0)
    place(district, *(referral(f"fam-{n}", minutes=n) for n in range(BAND_WINDOW + 10)))
    district.head.clear()  # as after draining, with the head not yet read again
    before = (district.queue_length, dict(district.added))

    with pytest.raises(BandNeeded):
        place(district, referral("late", minutes=-5))

    assert (district.queue_length, dict(district.added)) == before


def test_team_capacity_counts_current_workers_caps() -> None:
    district = district_with(amara=9, ben=4)
    team = domain.Team("northvale-north", "Northvale North", DISTRICT, 18)
    members = [
        domain.Worker("amara", "Amara", team.id, DISTRICT, 0.5, None, True, NOW),
        domain.Worker("ben", "Ben", team.id, DISTRICT, 0.25, 4, True, NOW),
        domain.Worker("cara", "Cara", team.id, DISTRICT, 1.0, None, False, NOW),
    ]

    event = domain.team_capacity(team, members, district, NOW)

    assert (event.workers, event.fte, event.capacity) == (2, 0.75, 13)


def test_a_queued_case_from_storage_keeps_its_place() -> None:
    district = district_with(amara=0)
    [case] = place(district, referral("fam-1")).opened
    stored = replace(case, referral_received_at=domain.to_millisecond(case.referral_received_at))

    assert place_of(stored) == district.head[0]


def test_a_referral_showing_more_need_raises_a_waiting_case_up_the_queue() -> None:
    district = district_with(amara=0)
    single = LevelOfNeed.EARLY_HELP_SINGLE_AGENCY
    first = place(
        district,
        referral("fam-1", minutes=0, level_of_need=single),
        referral("fam-2", minutes=1),
        referral("fam-3", minutes=2, level_of_need=single),
    )
    waiting = {case.family_id: case for case in first.opened}

    raised = place(
        district,
        referral("fam-3", minutes=5, level_of_need=LevelOfNeed.STATUTORY),
        referral("fam-1", minutes=6, level_of_need=LevelOfNeed.UNIVERSAL),
        open_cases=waiting,
    )

    assert [event.queue_position for event in raised.allocations] == [1, 3]
    assert [event.level_of_need for event in raised.allocations] == [
        LevelOfNeed.STATUTORY,
        single,
    ]
    assert raised.changed_districts == {DISTRICT}
    district.change_cap("amara", 3)
    assert [allocation.case_id for allocation in district.allocate_queue()] == [
        domain.case_id_for(f"ref-fam-{number}") for number in ("3-2", "2-1", "1-0")
    ]


def test_a_case_s_level_is_the_highest_of_its_referrals_in_any_order_of_arrival() -> None:
    levels = [LevelOfNeed.EARLY_HELP_SINGLE_AGENCY, LevelOfNeed.STATUTORY, LevelOfNeed.UNIVERSAL]
    seen = set()
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        district = district_with(amara=5)
        arrivals = [referral("fam-1", minutes=m, level_of_need=levels[m]) for m in order]
        placement = place(district, *arrivals)
        [case] = [*placement.opened, *placement.joined.values()][-1:]
        seen.add(case.level_of_need)
        assert placement.allocations[-1].level_of_need is LevelOfNeed.STATUTORY
        assert placement.changed_districts == {DISTRICT}
    assert seen == {LevelOfNeed.STATUTORY}
