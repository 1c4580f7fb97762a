"""The directory of local services that level-1 requests are signposted to.

Shaped like Open Referral UK (HSDS 3.0): a service, the organisation that runs it, who it
is for (eligibility ages), the needs it serves and the districts it covers. Needs use the
Supporting Families headline outcomes, the same vocabulary as the requests, so a request
is matched to services without any translation table.

Pure: the sample directory is loaded by ``sample.py``, a council's own by ``app.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, EmailStr, Field, TypeAdapter, model_validator

from shared.events import HeadlineOutcome

KEBAB_CASE = r"^[a-z0-9]+(-[a-z0-9]+)*$"

# HSDS 3.0 service statuses. Only active services are ever offered to a family.
ServiceStatus = Literal["active", "inactive", "defunct", "temporarily closed"]


class Organization(BaseModel):
    """Who runs a service: the council, the NHS, or a voluntary sector organisation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(
        pattern=KEBAB_CASE,
        description="Stable kebab-case organisation id.",
        examples=["wessexshire-county-council"],
    )
    name: str = Field(min_length=1, description="The organisation's name, as families know it.")


class Eligibility(BaseModel):
    """The ages a service is for, in whole years, both bounds inclusive.

    For a service to parents (debt advice, an IDVA), the ages are those of the children in
    the families it serves, so that signposting can match on the children's ages alone.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    minimum_age: int = Field(ge=0, description="Youngest age served, in whole years (inclusive).")
    maximum_age: int = Field(ge=0, description="Oldest age served, in whole years (inclusive).")

    @model_validator(mode="after")
    def _range_is_not_empty(self) -> Self:
        # An empty range would match no child and hide a data-entry slip; refuse it instead.
        if self.minimum_age > self.maximum_age:
            raise ValueError(
                f"minimum_age {self.minimum_age} is above maximum_age {self.maximum_age}"
            )
        return self


class DirectoryService(BaseModel):
    """A local service that families can be signposted to.

    Fields an Open Referral UK record carries beyond these are ignored, so a full export
    from a council's directory can be loaded as it is.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "id": "positive-parenting-programme",
                    "name": "Positive Parenting Programme",
                    "description": "Free eight-week evidence-based group for parents and carers"
                    " of children aged 2 to 12, on routines, boundaries and managing difficult"
                    " behaviour.",
                    "organization": {
                        "id": "wessexshire-county-council",
                        "name": "Wessexshire County Council",
                    },
                    "url": "https://wessexshire.example.org/services/positive-parenting-programme",
                    "email": "parenting@wessexshire.example.org",
                    "status": "active",
                    "eligibility": {"minimum_age": 2, "maximum_age": 12},
                    "needs": ["family_relationships", "early_years"],
                    "service_areas": ["northvale", "eastmere", "southford", "westbrook"],
                }
            ]
        },
    )

    id: str = Field(
        pattern=KEBAB_CASE,
        description="Stable kebab-case service id: signposting events refer to it.",
    )
    name: str = Field(min_length=1, description="The service's name, as families know it.")
    description: str = Field(description="What the service offers, in a sentence or two.")
    organization: Organization = Field(description="The organisation that runs the service.")
    url: str = Field(
        pattern=r"^https://", description="The service's web page, where families find it."
    )
    email: EmailStr | None = Field(default=None, description="Contact email, when it has one.")
    status: ServiceStatus = Field(
        description="HSDS service status: only active services are offered to families."
    )
    eligibility: Eligibility = Field(description="The ages the service is for.")
    needs: list[HeadlineOutcome] = Field(
        min_length=1, description="The Supporting Families headline outcomes the service serves."
    )
    service_areas: list[str] = Field(
        min_length=1, description="The districts the service covers: all of them if county-wide."
    )

    def is_eligible_at(self, age: int) -> bool:
        """Whether a child of this age, in whole years, is within the service's bounds."""
        return self.eligibility.minimum_age <= age <= self.eligibility.maximum_age


DIRECTORY = TypeAdapter(list[DirectoryService])
"""Reads a directory: a JSON list of services."""


def find_services(
    services: Iterable[DirectoryService],
    *,
    needs: Collection[HeadlineOutcome] = (),
    ages: Collection[int] = (),
    district: str | None = None,
) -> list[DirectoryService]:
    """The active services that fit a family, the best fit first.

    A service fits when it serves at least one of ``needs``, is for at least one of the
    children's ``ages`` and covers ``district``; a filter left empty does not narrow. A family
    has several needs and children, so one service helping with any of them is worth
    offering. Services meeting more of the needs come first, as fewer services to contact
    is easier for the family; then name and id, so the same request always gets the same
    list (signposting is repeatable on redelivery).
    """
    wanted = frozenset(needs)

    def fits(service: DirectoryService) -> bool:
        return (
            service.status == "active"
            and (not wanted or not wanted.isdisjoint(service.needs))
            and (not ages or any(service.is_eligible_at(age) for age in ages))
            and (district is None or district in service.service_areas)
        )

    return sorted(
        (service for service in services if fits(service)),
        key=lambda service: (-len(wanted.intersection(service.needs)), service.name, service.id),
    )
