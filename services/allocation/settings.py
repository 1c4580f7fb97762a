from __future__ import annotations

from pydantic import Field

from services.allocation.domain import DEFAULT_CAP_PER_FTE
from shared.settings import ServiceSettings


class AllocationSettings(ServiceSettings):
    service_name: str = "allocation"
    http_port: int = Field(default=8002, validation_alias="EARLYHELP_ALLOCATION_PORT")
    default_cap_per_fte: int = Field(
        default=DEFAULT_CAP_PER_FTE,
        ge=1,
        description="Families per full-time worker for a team created without its own figure.",
    )
    queue_sweep_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often every queue is offered any free capacity (also done at start).",
    )
