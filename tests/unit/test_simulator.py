"""The partner traffic model: realistic proportions, reproducible, and every submission
answered by the front door's own rules as the model says it will be."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, date, datetime

import pytest

from services.referral import domain
from services.referral.handlers import FrontDoor
from shared.events import read_envelope
from simulator.publish import SimulatorSettings, parse_args
from simulator.traffic import (
    EXPECTED_REJECTION,
    KIND_SHARES,
    ROUTE_SHARES,
    Invalid,
    Kind,
    Submission,
    Tally,
    partner_event,
    route_family,
    traffic,
)
from tests.factories import MATCH_KEYS

TODAY = date(2026, 12, 1)
SAMPLE = 10_000


@pytest.fixture(scope="module")
def sample() -> list[Submission]:
    return list(itertools.islice(traffic(2026, today=TODAY), SAMPLE))


Answer = domain.Screened | list[tuple[str, str]]


@pytest.fixture(scope="module")
def answered(sample: list[Submission]) -> list[tuple[Submission, Answer]]:
    return [(submission, answer(submission)) for submission in sample]


def share(count: int) -> float:
    return count / SAMPLE


def answer(submission: Submission) -> Answer:
    """What the front door makes of the document: screened, or its reasons (field, code)."""
    parsed = domain.parse_submission(submission.document)
    if isinstance(parsed, list):
        return [(reason.field, reason.code) for reason in parsed]
    screened = domain.screen_submission(parsed, FrontDoor.sample(MATCH_KEYS).districts, today=TODAY)
    if isinstance(screened, domain.Screened):
        return screened
    return [(reason.field, reason.code) for reason in screened]


def test_the_shares_each_sum_to_one_and_cover_every_route() -> None:
    assert sum(ROUTE_SHARES.values()) == pytest.approx(1)
    assert sum(KIND_SHARES.values()) == pytest.approx(1)
    assert set(ROUTE_SHARES) == {route.id for route in domain.ROUTE_CATALOGUE}


def test_kinds_come_in_their_stated_proportions(sample: list[Submission]) -> None:
    kinds = Counter(submission.kind for submission in sample)

    for kind, expected in KIND_SHARES.items():
        assert share(kinds[kind]) == pytest.approx(expected, abs=0.015), kind


def test_schools_make_about_forty_per_cent_and_the_other_sources_their_shares(
    sample: list[Submission],
) -> None:
    families = Counter(route_family(submission.route) for submission in sample)

    # Invalid route names (under 1%) take a little from every route.
    assert share(families["schools"]) == pytest.approx(0.40, abs=0.02)
    assert share(families["health"]) == pytest.approx(0.15, abs=0.015)
    assert share(families["police"]) == pytest.approx(0.10, abs=0.015)
    assert share(families["individuals"]) == pytest.approx(0.08, abs=0.015)
    assert {route.id for route in domain.ROUTE_CATALOGUE} <= {s.route for s in sample}


def test_siblings_carry_two_or_three_children_and_others_one_unless_repeated(
    sample: list[Submission],
) -> None:
    for submission in sample:
        children = len(submission.document["children"])
        if submission.kind is Kind.SIBLINGS:
            assert children in (2, 3)
        elif submission.kind is not Kind.REPEAT_FAMILY:
            assert children == 1
    assert share(sum(len(s.document["children"]) > 1 for s in sample)) >= 0.15


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    first = list(itertools.islice(traffic(7, today=TODAY), 500))
    again = list(itertools.islice(traffic(7, today=TODAY), 500))
    other = list(itertools.islice(traffic(8, today=TODAY), 500))

    assert first == again
    assert [s.document for s in first] != [s.document for s in other]


def test_every_kind_and_every_mistake_appears(sample: list[Submission]) -> None:
    assert {submission.kind for submission in sample} == set(Kind)
    assert {submission.invalid for submission in sample} == {None, *Invalid}


def test_valid_submissions_pass_the_front_doors_own_validation(
    answered: list[tuple[Submission, Answer]],
) -> None:
    for submission, screened in answered:
        if submission.valid:
            assert isinstance(screened, domain.Screened), (submission, screened)


def test_invalid_submissions_are_rejected_for_exactly_the_reason_they_carry(
    answered: list[tuple[Submission, Answer]],
) -> None:
    invalid = [(submission, reasons) for submission, reasons in answered if not submission.valid]

    assert share(len(invalid)) == pytest.approx(0.05, abs=0.01)
    for submission, reasons in invalid:
        assert submission.invalid is not None
        assert reasons == [EXPECTED_REJECTION[submission.invalid]], submission


def test_step_downs_and_co_working_carry_the_social_care_reference(
    answered: list[tuple[Submission, Answer]],
) -> None:
    for submission, screened in answered:
        if submission.kind is Kind.STEP_DOWN:
            assert isinstance(screened, domain.Screened)
            assert screened.is_step_down
            assert submission.document["social_care_case_reference"]
        if submission.kind is Kind.CO_WORKING:
            assert isinstance(screened, domain.Screened)
            assert screened.submission.open_to_social_care
            assert screened.submission.social_care_case_reference


def test_repeat_families_are_matched_to_a_family_already_referred_and_new_ones_are_not(
    answered: list[tuple[Submission, Answer]],
) -> None:
    """Judged by the front door's own family keys (UPN, NHS number, surname, birth, postcode)."""
    family_of: dict[str, str] = {}
    routes_of: dict[str, set[str]] = {}
    repeats = repeats_by_another_route = 0
    for submission, screened in answered:
        if not isinstance(screened, domain.Screened):
            continue
        keys = {key.value for key in domain.family_keys(screened.submission, MATCH_KEYS)}
        known = next((family_of[key] for key in sorted(keys) if key in family_of), None)
        if submission.kind is Kind.REPEAT_FAMILY:
            assert known is not None, submission
            repeats += 1
            repeats_by_another_route += submission.route not in routes_of[known]
        else:
            assert known is None, submission
        family = known or min(keys)
        for key in keys:
            family_of.setdefault(key, family)
        routes_of.setdefault(family, set()).add(submission.route)
    assert repeats_by_another_route / repeats > 0.7


def test_schools_send_pupils_upns_and_health_nhs_numbers(sample: list[Submission]) -> None:
    school_age = date(2022, 12, 1).isoformat()
    for submission in sample:
        if not submission.valid:
            continue
        for child in submission.document["children"]:
            if route_family(submission.route) == "schools":
                assert ("upn" in child) == (child["date_of_birth"] <= school_age)
            if route_family(submission.route) == "health":
                assert "nhs_number" in child


def test_the_partner_event_is_the_envelope_the_front_door_reads(
    sample: list[Submission],
) -> None:
    submission = sample[0]
    raw = partner_event(submission, event_id="e-1", now=datetime(2026, 12, 1, tzinfo=UTC))

    event = read_envelope(raw)
    assert event.type == "referral-submitted"
    assert event.source == f"/partners/{submission.partner_id}"
    assert event.id == "e-1"
    assert event.schemaversion == 1
    assert event.data == json.loads(json.dumps(submission.document))


def test_the_tally_counts_by_kind_reason_and_route_family(sample: list[Submission]) -> None:
    tally = Tally()
    for submission in sample[:1000]:
        tally.add(submission)

    assert tally.total == 1000
    lines = tally.report()
    assert lines[0].startswith("by kind: new_family ")
    assert "schools" in lines[2]
    assert sum(tally.route_families.values()) == 1000


def test_arguments_choose_a_rate_or_a_backlog_and_default_to_the_platforms_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = SimulatorSettings.model_validate({"kafka_port": 19092, "topic_namespace": "ns-"})

    backlog = parse_args(["--backlog", "60", "--seed", "3"], settings)
    rate = parse_args(["--rate", "2.5", "--count", "10"], settings)

    assert (backlog.rate, backlog.count, backlog.seed) == (None, 60, 3)
    assert (rate.rate, rate.count) == (2.5, 10)
    assert backlog.bootstrap == "127.0.0.1:19092"
    assert backlog.topic == "ns-referral-submitted"
    with pytest.raises(SystemExit):
        parse_args(["--backlog", "5", "--count", "3"], settings)
    with pytest.raises(SystemExit):
        parse_args([], settings)
