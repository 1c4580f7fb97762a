from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class ReferralSettings(ServiceSettings):
    service_name: str = "referral"
    http_port: int = Field(default=8001, validation_alias="EARLYHELP_REFERRAL_PORT")
