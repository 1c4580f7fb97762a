from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class AllocationSettings(ServiceSettings):
    service_name: str = "allocation"
    http_port: int = Field(default=8002, validation_alias="EARLYHELP_ALLOCATION_PORT")
