"""Events about a family as a whole."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import ConfigDict, Field

from shared.events.envelope import EventData, examples_of


class FamilyErased(EventData):
    """A family's personal data was erased by the referral service, which holds it.

    Every service acts on it for what it keeps of the family (its dead letters, and its
    own personal data), so erasure reaches everywhere the family was. It carries nothing
    about the family but its pseudonymous id.
    """

    event_type: ClassVar[str] = "family-erased"
    model_config = ConfigDict(json_schema_extra=examples_of("family-erased"))

    family_id: str = Field(description="The family whose personal data was erased.")
    erased_at: datetime = Field(description="When the referral service erased it.")
