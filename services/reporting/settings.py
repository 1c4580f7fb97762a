from __future__ import annotations

from pydantic import Field, field_validator

from services.reporting.domain import DEFAULT_FUNDING_WEIGHTS, parse_weights
from shared.settings import ServiceSettings


class ReportingSettings(ServiceSettings):
    service_name: str = "reporting"
    http_port: int = Field(default=8004, validation_alias="EARLYHELP_REPORTING_PORT")
    snapshot_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Least time between two performance-snapshot events of one month/district:"
        " each computes the month's figures from its facts, so not too often under load.",
    )
    funding_amount: int = Field(
        default=1_440_000, ge=0, description="Amount in pounds the funding split shares out."
    )
    funding_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_FUNDING_WEIGHTS),
        description="JSON object: the funding formula's weight of each input.",
    )

    @field_validator("funding_weights")
    @classmethod
    def _known_inputs(cls, weights: dict[str, float]) -> dict[str, float]:
        return parse_weights(",".join(f"{name}:{weight}" for name, weight in weights.items()))
