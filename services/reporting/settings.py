from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class ReportingSettings(ServiceSettings):
    service_name: str = "reporting"
    http_port: int = Field(default=8004, validation_alias="EARLYHELP_REPORTING_PORT")
