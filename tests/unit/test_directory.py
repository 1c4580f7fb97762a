"""The directory of local services and how signposting picks from it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.referral.directory import DirectoryService, Eligibility, find_services
from services.referral.sample import POSTCODE_DISTRICTS, load_sample_directory
from shared.events import HeadlineOutcome

DISTRICTS = frozenset(POSTCODE_DISTRICTS.values())
SAMPLE = load_sample_directory()
ACTIVE_SAMPLE = [service for service in SAMPLE if service.status == "active"]


def service(id: str, /, **changes: Any) -> DirectoryService:
    document: dict[str, Any] = {
        "id": id,
        "name": id.replace("-", " ").title(),
        "description": "A local service.",
        "organization": {"id": "wessexshire-county-council", "name": "Wessexshire County Council"},
        "url": f"https://wessexshire.example.org/services/{id}",
        "status": "active",
        "eligibility": {"minimum_age": 0, "maximum_age": 18},
        "needs": ["health"],
        "service_areas": sorted(DISTRICTS),
    }
    return DirectoryService.model_validate({**document, **changes})


def ids(services: list[DirectoryService]) -> list[str]:
    return [found.id for found in services]


# ---------------------------------------------------------------------------------------------
# The sample directory


def test_the_sample_directory_loads_and_validates() -> None:
    assert 30 <= len(SAMPLE) <= 40
    assert all(isinstance(found, DirectoryService) for found in SAMPLE)


def test_sample_service_ids_are_unique() -> None:
    assert len({found.id for found in SAMPLE}) == len(SAMPLE)


def test_sample_services_cover_only_the_countys_districts_and_ages_up_to_25() -> None:
    for found in SAMPLE:
        assert set(found.service_areas) <= DISTRICTS, found.id
        assert found.eligibility.maximum_age <= 25, found.id


def test_the_sample_offers_some_services_county_wide_and_some_locally() -> None:
    coverage = {len(set(found.service_areas)) for found in ACTIVE_SAMPLE}

    assert len(DISTRICTS) in coverage
    assert 1 in coverage


def test_the_sample_has_an_inactive_service_to_show_it_is_never_offered() -> None:
    inactive = [found for found in SAMPLE if found.status != "active"]

    assert inactive
    assert not set(ids(inactive)) & set(ids(find_services(SAMPLE)))


@pytest.mark.parametrize("district", sorted(DISTRICTS))
@pytest.mark.parametrize("need", list(HeadlineOutcome))
def test_every_need_is_served_in_every_district_by_an_active_service(
    need: HeadlineOutcome, district: str
) -> None:
    assert find_services(SAMPLE, needs=[need], district=district)


# ---------------------------------------------------------------------------------------------
# Filtering


def test_no_filters_return_every_active_service() -> None:
    directory = [service("a"), service("b"), service("c", status="inactive")]

    assert ids(find_services(directory)) == ["a", "b"]
    assert len(find_services(SAMPLE)) == len(ACTIVE_SAMPLE)


@pytest.mark.parametrize("status", ["inactive", "defunct", "temporarily closed"])
def test_a_service_that_is_not_active_is_never_returned_even_when_it_fits(status: str) -> None:
    closed = service("closed", status=status, needs=["housing"], service_areas=["eastmere"])

    assert find_services([closed], needs=[HeadlineOutcome.HOUSING], ages=[8]) == []
    assert find_services([closed], district="eastmere") == []


def test_a_service_matches_when_it_serves_any_of_the_needs() -> None:
    directory = [
        service("housing", needs=["housing"]),
        service("money", needs=["financial_stability", "housing"]),
        service("health", needs=["health"]),
    ]

    found = find_services(
        directory, needs=[HeadlineOutcome.HOUSING, HeadlineOutcome.FINANCIAL_STABILITY]
    )

    assert set(ids(found)) == {"housing", "money"}


def test_age_bounds_are_inclusive_at_both_ends() -> None:
    primary = service("primary", eligibility={"minimum_age": 5, "maximum_age": 11})

    assert ids(find_services([primary], ages=[5])) == ["primary"]
    assert ids(find_services([primary], ages=[11])) == ["primary"]
    assert find_services([primary], ages=[4]) == []
    assert find_services([primary], ages=[12]) == []


def test_a_service_matches_when_any_child_is_within_its_ages() -> None:
    under_fives = service("under-fives", eligibility={"minimum_age": 0, "maximum_age": 4})

    assert ids(find_services([under_fives], ages=[10, 3])) == ["under-fives"]
    assert find_services([under_fives], ages=[10, 7]) == []


def test_a_service_matches_only_the_districts_it_covers() -> None:
    local = service("local", service_areas=["northvale", "eastmere"])

    assert ids(find_services([local], district="eastmere")) == ["local"]
    assert find_services([local], district="westbrook") == []


def test_need_age_and_district_must_all_fit_together() -> None:
    directory = [
        service("fits", needs=["housing"], service_areas=["eastmere"]),
        service("wrong-need", needs=["health"], service_areas=["eastmere"]),
        service(
            "wrong-age",
            needs=["housing"],
            eligibility={"minimum_age": 16, "maximum_age": 25},
            service_areas=["eastmere"],
        ),
        service("wrong-district", needs=["housing"], service_areas=["southford"]),
    ]

    found = find_services(directory, needs=[HeadlineOutcome.HOUSING], ages=[8], district="eastmere")

    assert ids(found) == ["fits"]


def test_sample_services_found_for_a_family_all_fit_its_need_age_and_district() -> None:
    found = find_services(SAMPLE, needs=[HeadlineOutcome.HOUSING], ages=[8], district="eastmere")

    assert found
    for match in found:
        assert HeadlineOutcome.HOUSING in match.needs
        assert match.is_eligible_at(8)
        assert "eastmere" in match.service_areas


# ---------------------------------------------------------------------------------------------
# Ordering


def test_services_meeting_more_of_the_needs_come_first_then_by_name_then_id() -> None:
    directory = [
        service("one-need-b", name="Beta", needs=["housing"]),
        service("one-need-a2", name="Alpha", needs=["housing"]),
        service("one-need-a1", name="Alpha", needs=["financial_stability"]),
        service("two-needs", name="Zulu", needs=["housing", "financial_stability"]),
    ]

    found = find_services(
        directory, needs=[HeadlineOutcome.HOUSING, HeadlineOutcome.FINANCIAL_STABILITY]
    )

    assert ids(found) == ["two-needs", "one-need-a1", "one-need-a2", "one-need-b"]


def test_the_order_does_not_depend_on_the_order_of_the_directory() -> None:
    needs = [HeadlineOutcome.EDUCATION, HeadlineOutcome.FAMILY_RELATIONSHIPS]

    forwards = find_services(SAMPLE, needs=needs, ages=[10, 7], district="northvale")
    backwards = find_services(reversed(SAMPLE), needs=needs, ages=[10, 7], district="northvale")

    assert forwards
    assert ids(forwards) == ids(backwards)


def test_without_needs_services_are_ordered_by_name_then_id() -> None:
    directory = [service("c", name="B"), service("b", name="A"), service("a", name="B")]

    assert ids(find_services(directory)) == ["b", "a", "c"]


# ---------------------------------------------------------------------------------------------
# The model


def test_an_age_range_whose_minimum_is_above_its_maximum_is_rejected() -> None:
    with pytest.raises(ValidationError, match="minimum_age 12 is above maximum_age 5"):
        Eligibility(minimum_age=12, maximum_age=5)
    with pytest.raises(ValidationError):
        service("backwards", eligibility={"minimum_age": 12, "maximum_age": 5})


def test_a_single_age_range_is_allowed() -> None:
    assert Eligibility(minimum_age=3, maximum_age=3).maximum_age == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"needs": []},
        {"needs": ["happiness"]},
        {"service_areas": []},
        {"url": "http://wessexshire.example.org/services/x"},
        {"id": "Not Kebab"},
        {"status": "open"},
        {"eligibility": {"minimum_age": -1, "maximum_age": 5}},
    ],
)
def test_a_malformed_service_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        service("malformed", **changes)


def test_services_are_immutable() -> None:
    with pytest.raises(ValidationError):
        SAMPLE[0].name = "Renamed"  # type: ignore[misc]


def test_every_field_is_documented_for_the_openapi_document() -> None:
    schema = DirectoryService.model_json_schema()

    assert schema["examples"]
    DirectoryService.model_validate(schema["examples"][0])
    models = [schema, *(model for model in schema["$defs"].values() if "properties" in model)]
    assert len(models) == 3
    for model in models:
        for name, field in model["properties"].items():
            assert field.get("description"), name
