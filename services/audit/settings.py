from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    service_name: str = "audit"
    http_port: int = Field(default=8003, validation_alias="EARLYHELP_AUDIT_PORT")
