"""The front door's rules: postcodes, districts, routes, validation, screening, matching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.referral.domain import (
    POSTCODE_DISTRICTS,
    ROUTES,
    STEP_DOWN_ROUTE,
    Screened,
    check_rules,
    district_for,
    family_key,
    normalise_postcode,
    parse_submission,
    screen,
    screen_submission,
)
from shared.events import LevelOfNeed, ReferralSubmitted, ScreeningDecision

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"

CIN_REFERRAL_SOURCES = {
    "1A", "1B", "1C", "1D", "2A", "2B", "3A", "3B", "3C", "3D", "3E", "3F",
    "4", "5A", "5B", "5C", "5D", "6", "7", "8", "9", "10",
}  # fmt: skip


def submission_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def submission(**changes: Any) -> ReferralSubmitted:
    return ReferralSubmitted.model_validate({**submission_document(), **changes})


def codes(submission: ReferralSubmitted) -> list[str]:
    return [reason.code for reason in check_rules(submission)]


# ---------------------------------------------------------------------------------------------
# Postcodes and districts


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("WX3 4AB", "WX3 4AB"),
        ("wx3 4ab", "WX3 4AB"),
        ("wx1  2ab", "WX1 2AB"),
        ("WX12AB", "WX1 2AB"),
        ("  wx12 3cd  ", "WX12 3CD"),
        ("w x 1 5\t9 z z", "WX15 9ZZ"),
        ("SW1A 1AA", "SW1A 1AA"),
        ("m1 1ae", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
    ],
)
def test_normalise_postcode_fixes_spacing_and_case(given: str, expected: str) -> None:
    assert normalise_postcode(given) == expected


@pytest.mark.parametrize(
    "given",
    ["", "WX", "12345", "WX1 2A", "WXY1 2AB", "WX1 2A1", "WX1-2AB", "1WX 2AB", "WX1 2AB X"],
)
def test_normalise_postcode_gives_none_for_what_is_not_a_uk_postcode(given: str) -> None:
    assert normalise_postcode(given) is None


@pytest.mark.parametrize(
    ("postcode", "district"),
    [
        ("WX1 1AA", "northvale"),
        ("wx5 9zz", "northvale"),
        ("WX6 1AA", "eastmere"),
        ("WX10 1AA", "eastmere"),
        ("WX11 1AA", "southford"),
        ("WX15 1AA", "southford"),
        ("WX16 1AA", "westbrook"),
        ("wx201aa", "westbrook"),
    ],
)
def test_district_for_maps_the_outward_code_to_its_district(postcode: str, district: str) -> None:
    assert district_for(postcode) == district


@pytest.mark.parametrize("postcode", ["WX0 1AA", "WX21 1AA", "SW1A 1AA", "not a postcode"])
def test_district_for_gives_none_outside_the_area_or_for_invalid_postcodes(postcode: str) -> None:
    assert district_for(postcode) is None


def test_district_for_uses_the_districts_it_is_given() -> None:
    assert district_for("SW1A 1AA", {"SW1A": "westminster"}) == "westminster"
    assert district_for("WX1 1AA", {"SW1A": "westminster"}) is None


def test_every_served_outward_code_has_one_of_four_districts() -> None:
    assert len(POSTCODE_DISTRICTS) == 20
    assert set(POSTCODE_DISTRICTS.values()) == {"northvale", "eastmere", "southford", "westbrook"}


# ---------------------------------------------------------------------------------------------
# Routes


def test_every_route_maps_to_a_children_in_need_referral_source_code() -> None:
    invalid = {route: code for route, code in ROUTES.items() if code not in CIN_REFERRAL_SOURCES}

    assert invalid == {}


def test_there_are_at_least_thirty_routes() -> None:
    assert len(ROUTES) >= 30


def test_the_step_down_route_is_a_route_with_the_social_care_source_code() -> None:
    assert ROUTES[STEP_DOWN_ROUTE] == "5A"


# ---------------------------------------------------------------------------------------------
# parse_submission


def test_parse_submission_gives_the_submission_for_a_valid_document() -> None:
    parsed = parse_submission(submission_document())

    assert isinstance(parsed, ReferralSubmitted)
    assert parsed.partner_id == "northvale-primary"
    assert len(parsed.children) == 2


def test_parse_submission_names_a_childs_bad_date_by_its_dotted_path() -> None:
    document = submission_document()
    document["children"][0]["date_of_birth"] = "2016-13-45"

    parsed = parse_submission(document)

    assert isinstance(parsed, list)
    assert [reason.field for reason in parsed] == ["children.0.date_of_birth"]
    assert parsed[0].code.startswith("date")
    assert parsed[0].message


def test_parse_submission_gives_one_reason_per_problem() -> None:
    document = submission_document()
    del document["referrer"]
    document["children"][1]["gender"] = "unknown"
    document["address"]["postcode"] = "X"
    document["needs"] = []
    document["level_of_need"] = 7
    document["consent"]["misspelt_field"] = True

    parsed = parse_submission(document)

    assert isinstance(parsed, list)
    assert {(reason.field, reason.code) for reason in parsed} == {
        ("referrer", "missing"),
        ("children.1.gender", "literal_error"),
        ("address.postcode", "string_too_short"),
        ("needs", "too_short"),
        ("level_of_need", "enum"),
        ("consent.misspelt_field", "extra_forbidden"),
    }
    assert len(parsed) == 6


def test_parse_submission_of_something_that_is_not_an_object_gives_a_whole_document_reason() -> (
    None
):
    parsed = parse_submission(["not", "a", "submission"])

    assert isinstance(parsed, list)
    assert len(parsed) == 1
    assert parsed[0].field == ""


# ---------------------------------------------------------------------------------------------
# check_rules


def test_check_rules_accepts_the_valid_fixture() -> None:
    assert check_rules(submission()) == []


def test_check_rules_refuses_an_unknown_route_listing_the_valid_routes() -> None:
    reasons = check_rules(submission(route="carrier_pigeon"))

    assert [(reason.field, reason.code) for reason in reasons] == [("route", "unknown_route")]
    assert "'carrier_pigeon'" in reasons[0].message
    assert all(route in reasons[0].message for route in ROUTES)


def test_check_rules_refuses_a_postcode_outside_the_area() -> None:
    reasons = check_rules(submission(address={"line1": "10 Downing St", "postcode": "SW1A 2AA"}))

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("address.postcode", "outside_area")
    ]


def test_check_rules_refuses_a_postcode_that_is_not_a_uk_postcode() -> None:
    reasons = check_rules(submission(address={"line1": "1 Road", "postcode": "ABCDEF"}))

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("address.postcode", "invalid_postcode")
    ]


def test_check_rules_accepts_a_served_postcode_however_it_is_spaced() -> None:
    assert codes(submission(address={"line1": "1 Road", "postcode": "wx34ab"})) == []


def test_check_rules_refuses_no_consent_without_an_override() -> None:
    reasons = check_rules(submission(consent={"given": False}))

    assert [(reason.field, reason.code) for reason in reasons] == [("consent", "no_consent")]


def test_check_rules_accepts_no_consent_with_a_safeguarding_override() -> None:
    consent = {
        "given": False,
        "safeguarding_override": {
            "lawful_basis": "Children Act 1989 s.47: risk of significant harm",
            "recorded_by": "Team manager, front door",
        },
    }

    assert check_rules(submission(consent=consent)) == []


def test_check_rules_refuses_a_step_down_without_the_social_care_reference() -> None:
    reasons = check_rules(submission(route=STEP_DOWN_ROUTE))

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("social_care_case_reference", "missing")
    ]


def test_check_rules_refuses_a_step_down_with_an_empty_social_care_reference() -> None:
    assert codes(submission(route=STEP_DOWN_ROUTE, social_care_case_reference="")) == ["missing"]


def test_check_rules_accepts_a_step_down_with_the_social_care_reference() -> None:
    assert codes(submission(route=STEP_DOWN_ROUTE, social_care_case_reference="SC-2026-77")) == []


def test_check_rules_reports_every_broken_rule_at_once() -> None:
    broken = submission(
        route="carrier_pigeon",
        address={"line1": "1 Road", "postcode": "SW1A 2AA"},
        consent={"given": False},
    )

    assert codes(broken) == ["unknown_route", "outside_area", "no_consent"]


# ---------------------------------------------------------------------------------------------
# Screening


@pytest.mark.parametrize(
    ("level", "decision"),
    [
        (LevelOfNeed.UNIVERSAL, ScreeningDecision.SIGNPOST),
        (LevelOfNeed.EARLY_HELP_SINGLE_AGENCY, ScreeningDecision.EARLY_HELP),
        (LevelOfNeed.EARLY_HELP_MULTI_AGENCY, ScreeningDecision.EARLY_HELP),
        (LevelOfNeed.STATUTORY, ScreeningDecision.STEP_UP),
    ],
)
def test_screen_decides_by_level_of_need(level: LevelOfNeed, decision: ScreeningDecision) -> None:
    assert screen(level) is decision


def test_screen_submission_works_out_source_district_family_and_decision() -> None:
    valid = submission(level_of_need=3)

    screened = screen_submission(valid)

    assert isinstance(screened, Screened)
    assert screened.referral_source == "2A"
    assert screened.district == "northvale"
    assert screened.family_key == family_key(valid)
    assert screened.decision is ScreeningDecision.EARLY_HELP
    assert screened.is_step_down is False


def test_screen_submission_marks_a_step_down() -> None:
    screened = screen_submission(
        submission(route=STEP_DOWN_ROUTE, social_care_case_reference="SC-1")
    )

    assert isinstance(screened, Screened)
    assert screened.is_step_down is True
    assert screened.referral_source == "5A"


def test_screen_submission_gives_the_reasons_when_a_rule_is_broken() -> None:
    screened = screen_submission(submission(consent={"given": False}))

    assert not isinstance(screened, Screened)
    assert [reason.code for reason in screened] == ["no_consent"]


# ---------------------------------------------------------------------------------------------
# family_key


def test_family_key_ignores_name_case_spacing_and_child_order() -> None:
    document = submission_document()
    first = ReferralSubmitted.model_validate(document)
    children = [dict(child) for child in reversed(document["children"])]
    for child in children:
        child["family_name"] = " hAS san "
    second = ReferralSubmitted.model_validate(
        {
            **document,
            "children": children,
            "address": {**document["address"], "postcode": "wx34ab"},
        }
    )

    assert family_key(first) == family_key(second)


def test_family_key_differs_for_another_postcode() -> None:
    document = submission_document()
    other = {**document, "address": {**document["address"], "postcode": "WX3 4AC"}}

    assert family_key(submission()) != family_key(ReferralSubmitted.model_validate(other))


def test_family_key_differs_for_another_surname_or_birth_date() -> None:
    document = submission_document()
    renamed = [{**child, "family_name": "Hussain"} for child in document["children"]]
    redated = [dict(child) for child in document["children"]]
    redated[0]["date_of_birth"] = "2016-04-13"

    keys = {
        family_key(submission()),
        family_key(submission(children=renamed)),
        family_key(submission(children=redated)),
    }

    assert len(keys) == 3


def test_family_key_for_twins_with_different_surnames_does_not_depend_on_child_order() -> None:
    twins = [
        {"given_name": "Ali", "family_name": "Hassan", "date_of_birth": "2016-04-12"},
        {"given_name": "Ada", "family_name": "Hassan-Smith", "date_of_birth": "2016-04-12"},
    ]
    twins = [{**child, "gender": "not_known"} for child in twins]

    assert family_key(submission(children=twins)) == family_key(
        submission(children=list(reversed(twins)))
    )


def test_family_key_differs_for_different_surnames_in_a_non_latin_script() -> None:
    document = submission_document()
    first = [{**child, "family_name": "حسن"} for child in document["children"]]
    second = [{**child, "family_name": "王"} for child in document["children"]]

    assert family_key(submission(children=first)) != family_key(submission(children=second))
