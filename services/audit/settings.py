from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    service_name: str = "audit"
    http_port: int = Field(default=8003, validation_alias="EARLYHELP_AUDIT_PORT")
    audits_per_month: int = Field(
        default=1,
        ge=0,
        description="Audits each auditor owes a calendar month, unless their own"
        " record says otherwise.",
    )
    audit_closed_within_months: int = Field(
        default=3,
        ge=0,
        description="Closed cases stay in the audit sample for this many months after closing.",
    )
    draw_check_interval_s: float = Field(
        default=3600,
        gt=0,
        description="How often the service checks whether the current month has been drawn.",
    )
