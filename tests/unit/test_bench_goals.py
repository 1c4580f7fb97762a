"""The benchmark's arithmetic: the database's bound, the goals judged, the front door's tally.

No servers: the figures are made up, so each expected value can be worked out by hand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math

import pytest
from prometheus_client import generate_latest

from benchmarks import pipeline
from benchmarks.ceilings import Ceilings
from benchmarks.front_door import NO_ANSWER, Answer, FrontDoorFigures, percentile, summarise
from benchmarks.pipeline import (
    DatabaseWork,
    Figures,
    Goal,
    HistoryFigures,
    database_work_of,
    goals,
    results,
    total,
)
from shared.metrics import Metrics
from shared.settings import ServiceSettings

CEILINGS = Ceilings(
    record_bytes=972,
    produce_per_s=10_000,
    consume_per_s=100_000,
    round_trip_s=0.01,
    round_trip_p99_s=0.02,
    insert_one_per_s=1_000,
    insert_many_per_s=10_000,
    bulk_upsert_per_s=2_000,
    transaction_per_s=500,
)


def figures(**changed: object) -> Figures:
    base: dict[str, object] = {
        "backlog": 20_000,
        "backlog_published_s": 2.0,
        "backlog_done_s": 200.0,  # 100 submissions/s
        "referrals": 19_000,
        "rejections": 1_000,
        "cases_allocated": 500,
        "cases_queued": 13_000,
        # 10 inserted, 4 + 1 updated or deleted, 1 transaction a submission, in all
        "backlog_database": {
            "referral": DatabaseWork(120_000, 40_000, 0, 10_000),
            "allocation": DatabaseWork(80_000, 40_000, 20_000, 10_000),
        },
        "backlog_cpu_s": {"secantusdb (database)": 150.0, "services.referral": 20.0},
        "steady_rate": 10.0,
        "fresh_latency_samples": 300,
        "fresh_latency_p50_s": 0.05,
        "fresh_latency_p99_s": 0.2,
        "latency_samples": 300,
        "latency_p50_s": 0.06,
        "latency_p99_s": 0.3,
        "front_door": None,
        "front_door_database": {},
        "front_door_error": "skipped",
        "rebuild_events": 60_000,
        "rebuild_s": 10.0,
        "peak_memory_mib": {"services.referral": 120.0, "services.reporting": 160.0},
        "peak_memory_end_mib": {},
    }
    return Figures(**(base | changed))  # type: ignore[arg-type]


def named(found: list[Goal], start: str) -> Goal:
    (goal,) = [goal for goal in found if goal.name.startswith(start)]
    return goal


def test_the_bound_adds_each_kind_of_work_at_its_own_ceiling() -> None:
    # 10 / 10,000 + 5 / 2,000 + 1 / 500 = 0.001 + 0.0025 + 0.002 seconds a submission
    assert CEILINGS.database_bound(10, 5, 1) == pytest.approx(1 / 0.0055)
    assert CEILINGS.database_bound(0, 0, 0) == math.inf


def test_a_submission_s_work_is_the_services_summed_then_divided() -> None:
    work = total(figures().backlog_database).per(20_000)
    assert work == DatabaseWork(10, 4, 1, 1)
    assert work.bound(CEILINGS) == pytest.approx(1 / 0.0055)


def test_write_counters_are_read_back_from_the_metrics_text() -> None:
    metrics = Metrics()
    metrics.database_documents_written.labels("insert").inc(12)
    metrics.database_documents_written.labels("update").inc(5)
    metrics.database_documents_written.labels("delete").inc(2)
    metrics.database_transactions.inc(3)
    assert database_work_of(generate_latest(metrics.registry).decode()) == DatabaseWork(12, 5, 2, 3)


def test_a_service_without_the_counters_reads_as_no_work() -> None:
    assert database_work_of("earlyhelp_outbox_backlog 0.0\n") == DatabaseWork()


def test_the_backlog_goal_is_the_rate_against_150_and_its_share_of_the_bound() -> None:
    goal = named(goals(CEILINGS, figures(), HistoryFigures(referrals=0)), "backlog")
    assert goal.measured == pytest.approx(100)
    assert goal.met is False
    assert goal.ratio_to_ceiling == pytest.approx(100 * 0.0055)
    assert goal.note == ""


def test_a_smaller_run_is_judged_but_says_at_what_size() -> None:
    small = figures(backlog=2_000, backlog_done_s=10.0)
    goal = named(goals(CEILINGS, small, HistoryFigures(referrals=0)), "backlog")
    assert goal.met is True
    assert "2,000" in goal.note
    assert "20,000" in goal.note


def test_latency_after_the_backlog_is_judged_against_the_fresh_p99() -> None:
    found = goals(CEILINGS, figures(), HistoryFigures(referrals=0))
    after = named(found, "latency to case-allocated at 10/s after")
    assert after.measured == pytest.approx(1.5)
    assert after.met is False
    assert named(found, "latency to case-allocated at 10/s, fresh").met is True


def test_each_service_s_memory_is_a_goal_and_the_database_s_only_a_figure() -> None:
    memory = {"services.referral": 120.0, "services.reporting": 160.0, "secantusdb": 900.0}
    found = goals(CEILINGS, figures(peak_memory_mib=memory), HistoryFigures(referrals=0))
    assert named(found, "peak memory of services.referral").met is True
    assert named(found, "peak memory of services.reporting").met is False
    database = named(found, "peak memory of secantusdb")
    assert (database.met, database.measured) == (None, 900.0)


def test_pages_not_measured_are_reported_with_the_reason_and_not_judged() -> None:
    history = HistoryFigures(referrals=200_000, error="ImportError: no benchmarks.history")
    goal = named(goals(CEILINGS, figures(), history), "each page")
    assert goal.met is None
    assert "ImportError" in goal.note


def test_each_page_measured_is_a_goal_of_its_own() -> None:
    history = HistoryFigures(
        referrals=200_000,
        pages={
            "monthly report": {"p50_ms": 40, "p95_ms": 90, "bytes": 4000},
            "queue page": {"p50_ms": 100, "p95_ms": 200, "bytes": 9000},
        },
    )
    found = goals(CEILINGS, figures(), history)
    assert named(found, "page monthly report").met is True
    queue = named(found, "page queue page")
    assert queue.met is False
    assert queue.ratio_to_ceiling == pytest.approx(200)  # a bare insert_one takes 1 ms


def test_the_rebuild_is_judged_against_5000_events_a_second() -> None:
    goal = named(goals(CEILINGS, figures(), HistoryFigures(referrals=0)), "rebuild")
    assert goal.measured == pytest.approx(6000)
    assert goal.met is True


def answer(
    status: int, seconds: float = 0.1, number: int = 0, *, duplicate: bool = False
) -> Answer:
    return Answer("partner-1", f"s-{status}-{number}", status, seconds, duplicate)


def test_the_front_door_s_answers_are_tallied_by_kind() -> None:
    answers = [
        answer(202, 0.1, 1),
        answer(202, 0.2, 2),
        answer(202, 0.3, 3, duplicate=True),
        answer(422, 0.1),
        answer(429, 0.01),
        answer(503, 1.0),
        answer(401, 0.01),
        answer(415, 0.01),
        answer(NO_ANSWER, 0.0),
    ]
    door = summarise(
        answers,
        partners=1,
        seconds=2.0,
        received={("partner-1", "s-202-1")},
        rejections={("partner-1", "s-422-0")},
        limits=ServiceSettings(write_rate_per_s=20, write_burst=40),
    )
    assert (door.requests, door.accepted, door.duplicates, door.rejected) == (9, 2, 1, 1)
    assert (door.rate_limited, door.server_errors, door.other_non_2xx, door.no_answer) == (
        1,
        1,
        2,
        1,
    )
    assert door.accepted_per_s == 1.0
    assert (door.received, door.rejections_found, door.lost) == (1, 1, 1)
    assert door.limit_per_s == 20


def test_the_front_door_goals_use_its_own_cost_a_request() -> None:
    door = FrontDoorFigures(
        partners=50,
        seconds=30.0,
        requests=3000,
        accepted=3000,
        duplicates=0,
        rejected=0,
        rate_limited=0,
        server_errors=0,
        other_non_2xx=0,
        no_answer=0,
        accepted_per_s=100.0,
        p50_s=0.1,
        p99_s=0.4,
        received=3000,
        rejections_found=0,
        lost=0,
        partner_rate_per_s=20.0,
        partner_burst=40,
    )
    # 10 inserted and 1 transaction a request: 0.001 + 0.002 seconds, a bound of 333/s
    work = {"referral": DatabaseWork(30_000, 0, 0, 3_000)}
    found = goals(
        CEILINGS,
        figures(front_door=door, front_door_database=work, front_door_error=None),
        HistoryFigures(referrals=0),
    )
    accepted = named(found, "front door over HTTP, accepted")
    assert accepted.met is False
    assert accepted.ratio_to_ceiling == pytest.approx(100 * 0.003)
    assert named(found, "front door over HTTP, p99").met is True
    assert named(found, "front door: answered").met is True


def test_cpu_is_shown_busiest_first_a_thousand_submissions_worth_and_against_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("benchmarks.pipeline.os.cpu_count", lambda: 2)

    lines = pipeline.cpu_lines(figures())

    # 170 s used of the 2 cores' 400 s in the backlog's 200 s
    assert "170 s of the 400 s" in lines[0]
    assert "= 42% busy" in lines[0]
    assert lines[1].split()[0] == "secantusdb"
    assert "150.0 s = 7.50 s a 1,000 submissions, 38% of the cores" in lines[1]
    assert "20.0 s = 1.00 s a 1,000 submissions, 5% of the cores" in lines[2]


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([float(n) for n in range(100)], 0.99) == 99.0
    assert math.isnan(percentile([], 0.99))


def test_the_json_has_every_goal_and_no_nan() -> None:
    history = HistoryFigures(referrals=0, error="skipped")
    written = results(CEILINGS, figures(fresh_latency_p99_s=math.nan), history)
    text = json.dumps(written, allow_nan=False)
    decoded = json.loads(text)
    assert set(decoded) == {"machine", "ceilings", "goals", "figures"}
    assert {"name", "target", "measured", "unit", "met", "ratio_to_ceiling"} <= set(
        decoded["goals"][0]
    )
    fresh = [goal for goal in decoded["goals"] if "fresh" in goal["name"]]
    assert fresh[0]["measured"] is None
    assert fresh[0]["met"] is None
    assert decoded["figures"]["database"]["backlog"]["bound_per_s"] == pytest.approx(1 / 0.0055)


def test_a_history_phase_whose_modules_cannot_load_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    history = pipeline.history_phase(argparse.Namespace(history=20_000, seed=7))
    assert history.error == "ModuleNotFoundError: No module named 'benchmarks.history'"
    assert not history.measured
    assert pipeline.history_lines(CEILINGS, history) == [f"history: not measured: {history.error}"]


def test_no_history_asked_for_is_skipped() -> None:
    history = pipeline.history_phase(argparse.Namespace(history=0, seed=7))
    assert history.error == "skipped (--history 0)"
