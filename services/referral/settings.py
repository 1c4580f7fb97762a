from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from services.referral.domain import MatchKeys
from services.referral.handlers import MAX_SUBMISSION_BYTES
from shared.secrets import read_secret
from shared.settings import ServiceSettings


class ReferralSettings(ServiceSettings):
    service_name: str = "referral"
    match_key_secret: SecretStr | None = Field(
        default=None,
        description="Secret the family-match keys are HMAC-SHA-256 under (at least 32 bytes):"
        " without it nobody can recompute a key from a child's details. Rotating it needs"
        " `python -m services.referral.rekey`.",
    )
    match_key_secret_file: Path | None = Field(
        default=None, description="A file holding the match-key secret, e.g. a mounted secret."
    )
    http_port: int = Field(default=8001, validation_alias="EARLYHELP_REFERRAL_PORT")
    postcode_districts_file: Path | None = Field(
        default=None,
        description="JSON object of postcode outward code -> district. Unset: the sample"
        " county's table with EARLYHELP_SAMPLE_DATA=true, else none (every postcode is outside"
        " the area, and /ready says so).",
    )
    directory_file: Path | None = Field(
        default=None,
        description="JSON list of local services (Open Referral UK shaped) for signposting."
        " Unset: the sample directory with EARLYHELP_SAMPLE_DATA=true, else none.",
    )
    max_submission_bytes: int = Field(
        default=MAX_SUBMISSION_BYTES,
        ge=4096,
        description="Largest submission read, in bytes, over HTTP (413 beyond) and Kafka"
        " (referral-rejected too_large beyond).",
    )
    retention_years: int = Field(
        default=6,
        ge=1,
        description="Years a closed family's personal data is kept before it is due for review.",
    )


def match_keys_of(settings: ReferralSettings) -> MatchKeys:
    """The keys families are matched by; the service does not start without their secret."""
    secret = read_secret(
        settings.match_key_secret,
        settings.match_key_secret_file,
        variable="EARLYHELP_MATCH_KEY_SECRET",
    )
    return MatchKeys(secret)
