"""Sample auditors for the fictional county of Wessexshire: one team manager per locality
team and one head of service per district, so a fresh install has a month to draw."""

from __future__ import annotations

from services.audit.domain import Auditor, AuditorRole

TEAMS: dict[str, tuple[str, ...]] = {
    "northvale": ("northvale-north", "northvale-central", "northvale-south"),
    "eastmere": ("eastmere-coast", "eastmere-town"),
    "southford": ("southford-east", "southford-west"),
    "westbrook": ("westbrook-rural", "westbrook-town"),
}

_TEAM_MANAGERS = {
    "northvale-north": "Priya Shah",
    "northvale-central": "Tom Hughes",
    "northvale-south": "Grace Adeyemi",
    "eastmere-coast": "Owen Price",
    "eastmere-town": "Hannah Kowalski",
    "southford-east": "Daniel Mensah",
    "southford-west": "Ruth Gallagher",
    "westbrook-rural": "Imran Qureshi",
    "westbrook-town": "Ellie Thornton",
}

_HEADS_OF_SERVICE = {
    "northvale": "Margaret Ellis",
    "eastmere": "Samuel Oduya",
    "southford": "Claire Fenwick",
    "westbrook": "Rajesh Nair",
}


def sample_auditors() -> list[Auditor]:
    return [
        *(
            Auditor(
                id=f"tm-{team_id}",
                name=_TEAM_MANAGERS[team_id],
                role=AuditorRole.TEAM_MANAGER,
                district=district,
                team_id=team_id,
            )
            for district, teams in TEAMS.items()
            for team_id in teams
        ),
        *(
            Auditor(
                id=f"hos-{district}",
                name=name,
                role=AuditorRole.HEAD_OF_SERVICE,
                district=district,
            )
            for district, name in _HEADS_OF_SERVICE.items()
        ),
    ]
