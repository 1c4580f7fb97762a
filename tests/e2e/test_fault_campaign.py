"""The short fault campaign: the platform loses nothing while each service and the broker are
SIGKILLed once and the database restarts, over the real broker and an on-disk database.

The full campaign (``make campaign``) sends 2,000 submissions, kills each service twice and
keeps the database down for longer than a consumer's tries take.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resilience.campaign import CampaignConfig, run_campaign

pytestmark = pytest.mark.infra


async def test_nothing_is_lost_when_services_and_the_broker_are_killed_and_the_database_restarts(
    tmp_path: Path,
) -> None:
    result = await run_campaign(
        CampaignConfig(
            submissions=300,
            seed=11,
            kills_per_service=1,
            restart_database=True,
            database_down_s=5,
            kill_broker=True,
            cap_per_fte=2,
            work_dir=tmp_path,
        )
    )

    assert len(result.progress.kills) == 4
    assert result.progress.database_restarts == 1
    assert result.progress.broker_kills == 1
    assert result.progress.closed > 0
    assert result.progress.audits_completed > 0
    queued = [check for check in result.checks if check.name.endswith("all: queued_at_month_end")]
    assert sum(check.actual for check in queued) > 0, "capacity never ran out: no queue formed"
    assert not result.breaches, result.report()
