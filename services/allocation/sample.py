"""The fictional county of Wessexshire's nine locality teams and their lead practitioners,
loaded only when ``EARLYHELP_SAMPLE_DATA`` asks for them (``make run`` and the tests do)."""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files

from services.allocation.domain import DEFAULT_CAP_PER_FTE, Team, Worker


def sample_county(now: datetime) -> tuple[list[Team], list[Worker]]:
    data = json.loads(files("services.allocation").joinpath("data/teams.json").read_text())
    teams = [
        Team(
            team["id"], team["name"], team["district"], team.get("cap_per_fte", DEFAULT_CAP_PER_FTE)
        )
        for team in data["teams"]
    ]
    district = {team.id: team.district for team in teams}
    workers = [
        Worker(
            id=worker["id"],
            name=worker["name"],
            team_id=worker["team_id"],
            district=district[worker["team_id"]],
            fte=worker["fte"],
            cap_override=worker.get("caseload_cap"),
            active=True,
            joined_at=now,
        )
        for worker in data["workers"]
    ]
    return teams, workers
