"""The simulator against the real front door: each submission of a backlog is answered over
the real broker, accepted or rejected as the traffic model says, for the reason it says."""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.referral.app import create_app
from services.referral.settings import ReferralSettings
from shared.events import ReferralReceived, ReferralRejected
from simulator.traffic import Kind, traffic
from tests.conftest import Infra, Namespace
from tests.support import TopicReader, eventually

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
BACKLOG = 60
SEED = 41


async def test_a_backlog_is_answered_by_the_front_door_as_the_traffic_model_says(
    infra: Infra, namespace: Namespace
) -> None:
    expected = list(itertools.islice(traffic(SEED, today=datetime.now(UTC).date()), BACKLOG))
    valid = [submission for submission in expected if submission.valid]
    invalid = {
        submission.submission_id: submission.expected_rejection
        for submission in expected
        if not submission.valid
    }
    assert valid, "pick a seed whose backlog has valid submissions"
    assert invalid, "pick a seed whose backlog has invalid submissions"
    app = create_app(namespace.settings(ReferralSettings, infra))
    readers = [
        TopicReader(infra.kafka_bootstrap_servers, namespace.topic(model.event_type), model)
        for model in (ReferralReceived, ReferralRejected)
    ]
    async with app.router.lifespan_context(app):
        for reader in readers:
            await reader.start()
        try:
            simulator = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "simulator", "--backlog", str(BACKLOG)),
                *("--seed", str(SEED), "--bootstrap", infra.kafka_bootstrap_servers),
                *("--topic-namespace", namespace.topics),
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(simulator.communicate(), timeout=60)
            assert simulator.returncode == 0, err.decode()
            assert f"sent {BACKLOG} submissions" in out.decode()

            received, rejected = readers

            async def answers() -> tuple[list[Any], list[Any]]:
                return await received.events(), await rejected.events()

            accepted, refused = await eventually(
                answers,
                lambda seen: len(seen[0]) + len(seen[1]) >= BACKLOG,
                timeout_s=90,
            )
        finally:
            for reader in readers:
                await reader.stop()

    assert sorted(event.submission_id for event in accepted) == sorted(
        submission.submission_id for submission in valid
    )
    assert {
        event.submission_id: [(reason.field, reason.code) for reason in event.reasons]
        for event in refused
    } == {submission_id: [reason] for submission_id, reason in invalid.items()}
    # Whatever order the partitions were read in, a repeat joins a family already known.
    new_families = [s for s in valid if s.kind is not Kind.REPEAT_FAMILY]
    assert len({event.family_id for event in accepted}) == len(new_families)
    assert sum(event.is_step_down for event in accepted) == sum(
        submission.kind is Kind.STEP_DOWN for submission in valid
    )
    assert sum(event.open_to_social_care for event in accepted) == sum(
        submission.kind is Kind.CO_WORKING for submission in valid
    )
