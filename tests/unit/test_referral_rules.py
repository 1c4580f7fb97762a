"""The front door's rules: postcodes, districts, routes, validation, screening, matching."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from services.referral import domain
from services.referral.domain import (
    CIN_REFERRAL_SOURCES,
    ROUTE_CATALOGUE,
    ROUTES,
    STEP_DOWN_ROUTE,
    FamilyHistory,
    KnownFamilies,
    Screened,
    age_on,
    check_rules,
    district_for,
    erasure,
    is_re_referral,
    nhs_number_problem,
    normalise_postcode,
    parse_submission,
    screen,
    screen_submission,
    upn_problem,
)
from services.referral.handlers import new_family_id
from services.referral.sample import POSTCODE_DISTRICTS
from shared.events import FamilyMatchRule, LevelOfNeed, ReferralSubmitted, ScreeningDecision
from tests.factories import MATCH_KEYS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "referral.json"

CENSUS_CODES = {
    "1A", "1B", "1C", "1D", "2A", "2B", "3A", "3B", "3C", "3D", "3E", "3F",
    "4", "5A", "5B", "5C", "5D", "6", "7", "8", "9", "10",
}  # fmt: skip
TODAY = date(2026, 11, 22)


def family_keys(request: ReferralSubmitted) -> list[domain.FamilyKey]:
    return domain.family_keys(request, MATCH_KEYS)


def match_family(request: ReferralSubmitted, known: KnownFamilies) -> domain.FamilyMatch:
    return domain.match_family(family_keys(request), known, new_family_id="fam-new")


def raw_family_keys(document: Any) -> set[str]:
    return erasure.raw_family_keys(document, MATCH_KEYS)


def demographic_keys(request: ReferralSubmitted) -> set[str]:
    return {
        key.value
        for key in family_keys(request)
        if key.rule is FamilyMatchRule.SURNAME_DOB_POSTCODE
    }


def submission_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def submission(**changes: Any) -> ReferralSubmitted:
    return ReferralSubmitted.model_validate({**submission_document(), **changes})


def codes(submission: ReferralSubmitted) -> list[str]:
    return [reason.code for reason in check_rules(submission, POSTCODE_DISTRICTS)]


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
    assert district_for(postcode, POSTCODE_DISTRICTS) == district


@pytest.mark.parametrize("postcode", ["WX0 1AA", "WX21 1AA", "SW1A 1AA", "not a postcode"])
def test_district_for_gives_none_outside_the_area_or_for_invalid_postcodes(postcode: str) -> None:
    assert district_for(postcode, POSTCODE_DISTRICTS) is None


def test_district_for_uses_the_districts_it_is_given() -> None:
    assert district_for("SW1A 1AA", {"SW1A": "westminster"}) == "westminster"
    assert district_for("WX1 1AA", {"SW1A": "westminster"}) is None


def test_every_served_outward_code_has_one_of_four_districts() -> None:
    assert len(POSTCODE_DISTRICTS) == 20
    assert set(POSTCODE_DISTRICTS.values()) == {"northvale", "eastmere", "southford", "westbrook"}


# ---------------------------------------------------------------------------------------------
# Routes


def test_every_route_maps_to_a_children_in_need_referral_source_code() -> None:
    invalid = {route: code for route, code in ROUTES.items() if code not in CENSUS_CODES}

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
    assert check_rules(submission(), POSTCODE_DISTRICTS) == []


def test_check_rules_refuses_an_unknown_route_listing_the_valid_routes() -> None:
    reasons = check_rules(submission(route="carrier_pigeon"), POSTCODE_DISTRICTS)

    assert [(reason.field, reason.code) for reason in reasons] == [("route", "unknown_route")]
    assert "'carrier_pigeon'" in reasons[0].message
    assert all(route in reasons[0].message for route in ROUTES)


def test_check_rules_refuses_a_postcode_outside_the_area() -> None:
    reasons = check_rules(
        submission(address={"line1": "10 Downing St", "postcode": "SW1A 2AA"}), POSTCODE_DISTRICTS
    )

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("address.postcode", "outside_area")
    ]


def test_check_rules_refuses_a_postcode_that_is_not_a_uk_postcode() -> None:
    reasons = check_rules(
        submission(address={"line1": "1 Road", "postcode": "ABCDEF"}), POSTCODE_DISTRICTS
    )

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("address.postcode", "invalid_postcode")
    ]


def test_check_rules_accepts_a_served_postcode_however_it_is_spaced() -> None:
    assert codes(submission(address={"line1": "1 Road", "postcode": "wx34ab"})) == []


def test_check_rules_refuses_no_consent_without_an_override() -> None:
    reasons = check_rules(submission(consent={"given": False}), POSTCODE_DISTRICTS)

    assert [(reason.field, reason.code) for reason in reasons] == [("consent", "no_consent")]


def test_check_rules_accepts_no_consent_with_a_safeguarding_override() -> None:
    consent = {
        "given": False,
        "safeguarding_override": {
            "lawful_basis": "Children Act 1989 s.47: risk of significant harm",
            "recorded_by": "Team manager, front door",
        },
    }

    assert check_rules(submission(consent=consent), POSTCODE_DISTRICTS) == []


def test_check_rules_refuses_a_step_down_without_the_social_care_reference() -> None:
    reasons = check_rules(submission(route=STEP_DOWN_ROUTE), POSTCODE_DISTRICTS)

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
    screening = screen(level)

    assert screening.decision is decision
    assert f"level {level.value}" in screening.reason
    assert screening.rules_version


@pytest.mark.parametrize("level", list(LevelOfNeed))
def test_a_safeguarding_concern_steps_up_whatever_the_level(level: LevelOfNeed) -> None:
    screening = screen(level, safeguarding_concern=True)

    assert screening.decision is ScreeningDecision.STEP_UP
    assert "safeguarding concern" in screening.reason


def test_screen_submission_works_out_source_district_ages_and_decision() -> None:
    valid = submission(level_of_need=3)

    screened = screen_submission(valid, POSTCODE_DISTRICTS, today=TODAY)

    assert isinstance(screened, Screened)
    assert screened.referral_source == "2A"
    assert screened.district == "northvale"
    assert screened.child_ages == (10, 7)
    assert screened.decision is ScreeningDecision.EARLY_HELP
    assert screened.is_step_down is False


def test_screen_submission_marks_a_step_down() -> None:
    screened = screen_submission(
        submission(route=STEP_DOWN_ROUTE, social_care_case_reference="SC-1"),
        POSTCODE_DISTRICTS,
        today=TODAY,
    )

    assert isinstance(screened, Screened)
    assert screened.is_step_down is True
    assert screened.referral_source == "5A"


def test_screen_submission_gives_the_reasons_when_a_rule_is_broken() -> None:
    screened = screen_submission(
        submission(consent={"given": False}), POSTCODE_DISTRICTS, today=TODAY
    )

    assert not isinstance(screened, Screened)
    assert [reason.code for reason in screened] == ["no_consent"]


# ---------------------------------------------------------------------------------------------
# family matching


def test_demographic_keys_ignore_name_case_spacing_and_child_order() -> None:
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

    assert demographic_keys(first) == demographic_keys(second)


def test_demographic_keys_differ_for_another_postcode() -> None:
    document = submission_document()
    other = {**document, "address": {**document["address"], "postcode": "WX3 4AC"}}

    assert demographic_keys(submission()) != demographic_keys(
        ReferralSubmitted.model_validate(other)
    )


def test_demographic_keys_differ_for_another_surname_or_birth_date() -> None:
    document = submission_document()
    renamed = [{**child, "family_name": "Hussain"} for child in document["children"]]
    redated = [dict(child) for child in document["children"]]
    redated[0]["date_of_birth"] = "2016-04-13"

    first, second, third = (
        demographic_keys(submission()),
        demographic_keys(submission(children=renamed)),
        demographic_keys(submission(children=redated)),
    )

    assert first.isdisjoint(second)
    assert len(first & third) == len(first) - 1, "only the redated child's key differs"


def test_demographic_keys_differ_for_different_surnames_in_a_non_latin_script() -> None:
    document = submission_document()
    first = [{**child, "family_name": "حسن"} for child in document["children"]]
    second = [{**child, "family_name": "王"} for child in document["children"]]

    assert demographic_keys(submission(children=first)).isdisjoint(
        demographic_keys(submission(children=second))
    )


def test_family_keys_cannot_be_recomputed_without_the_secret() -> None:
    request = with_children({"family_name": "Hassan", "date_of_birth": "2016-04-12"})
    [key] = family_keys(request)
    plain = hashlib.sha256(b"surname_dob_postcode:hassan|2016-04-12|WX3 4AB").hexdigest()

    assert key.value != plain
    assert key == family_keys(request)[0], "the same secret gives the same key"
    [other] = domain.family_keys(request, domain.MatchKeys(b"another-secret-" * 3))
    assert other.value != key.value
    expected = hmac.new(
        MATCH_KEYS.secret, b"surname_dob_postcode:hassan|2016-04-12|WX3 4AB", hashlib.sha256
    )
    assert key.value == expected.hexdigest()


def test_a_new_family_id_is_random_and_says_nothing_of_the_children() -> None:
    ids = {new_family_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(re.fullmatch(r"fam-[0-9a-f]{20}", family_id) for family_id in ids)


# ---------------------------------------------------------------------------------------------
# The route catalogue


def test_every_census_code_in_the_catalogue_is_described() -> None:
    assert {route.referral_source for route in ROUTE_CATALOGUE} <= set(CIN_REFERRAL_SOURCES)
    assert set(CIN_REFERRAL_SOURCES) == CENSUS_CODES


def test_route_ids_are_unique_and_named() -> None:
    ids = [route.id for route in ROUTE_CATALOGUE]

    assert len(ids) == len(set(ids))
    assert all(route.name for route in ROUTE_CATALOGUE)


# ---------------------------------------------------------------------------------------------
# Identifiers, dates and consent


@pytest.mark.parametrize("upn", ["A123456789012", "H801200001001", "h8012 0000 1001"])
def test_a_upn_with_the_right_check_letter_is_valid(upn: str) -> None:
    assert upn_problem(upn) is None


@pytest.mark.parametrize(
    ("upn", "problem"),
    [
        ("B123456789012", "check letter should be A, not B"),
        ("A12345678901", "13 characters"),
        ("1123456789012", "13 characters"),
    ],
)
def test_a_upn_with_a_wrong_check_letter_or_shape_is_refused(upn: str, problem: str) -> None:
    found = upn_problem(upn)

    assert found is not None
    assert problem in found


@pytest.mark.parametrize("nhs", ["9434765919", "943 476 5919", "943-476-5919"])
def test_an_nhs_number_with_the_right_check_digit_is_valid(nhs: str) -> None:
    assert nhs_number_problem(nhs) is None


@pytest.mark.parametrize(
    ("nhs", "problem"),
    [("9434765918", "check digit"), ("943476591", "10 digits"), ("94347659AB", "10 digits")],
)
def test_an_nhs_number_with_a_wrong_check_digit_or_shape_is_refused(nhs: str, problem: str) -> None:
    found = nhs_number_problem(nhs)

    assert found is not None
    assert problem in found


def test_check_rules_names_each_childs_bad_identifier_by_its_path() -> None:
    document = submission_document()
    document["children"][0]["upn"] = "B123456789012"
    document["children"][1]["nhs_number"] = "9434765918"

    reasons = check_rules(ReferralSubmitted.model_validate(document), POSTCODE_DISTRICTS)

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("children.0.upn", "invalid_upn"),
        ("children.1.nhs_number", "invalid_nhs_number"),
    ]


def test_check_rules_refuses_a_birth_date_more_than_forty_weeks_ahead() -> None:
    document = submission_document()
    document["children"][1]["date_of_birth"] = "2027-12-01"

    reasons = check_rules(
        ReferralSubmitted.model_validate(document), POSTCODE_DISTRICTS, today=TODAY
    )

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("children.1.date_of_birth", "date_of_birth_in_future")
    ]


def test_check_rules_accepts_an_unborn_babys_expected_date() -> None:
    document = submission_document()
    document["children"][1]["date_of_birth"] = "2027-03-01"

    assert (
        check_rules(ReferralSubmitted.model_validate(document), POSTCODE_DISTRICTS, today=TODAY)
        == []
    )


def test_check_rules_refuses_someone_older_than_twenty_five() -> None:
    document = submission_document()
    document["children"][0]["date_of_birth"] = "1990-01-01"

    reasons = check_rules(
        ReferralSubmitted.model_validate(document), POSTCODE_DISTRICTS, today=TODAY
    )

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("children.0.date_of_birth", "too_old")
    ]


@pytest.mark.parametrize(
    "consent",
    [
        {"given": True},
        {"given": True, "given_by": "Layla Hassan (mother)"},
        {"given": True, "given_at": "2026-11-20T10:00:00Z"},
    ],
)
def test_consent_given_needs_who_and_when(consent: dict[str, Any]) -> None:
    assert codes(submission(consent=consent)) == ["consent_incomplete"]


def test_a_family_open_to_social_care_needs_the_social_care_reference() -> None:
    reasons = check_rules(submission(open_to_social_care=True), POSTCODE_DISTRICTS)

    assert [(reason.field, reason.code) for reason in reasons] == [
        ("social_care_case_reference", "missing")
    ]
    assert codes(submission(open_to_social_care=True, social_care_case_reference="CSC-9")) == []


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (date(2016, 4, 12), date(2026, 4, 11), 9),
        (date(2016, 4, 12), date(2026, 4, 12), 10),
        (date(2027, 1, 1), date(2026, 11, 22), 0),
    ],
)
def test_age_on_counts_whole_years(born: date, on: date, age: int) -> None:
    assert age_on(born, on) == age


# ---------------------------------------------------------------------------------------------
# Matching


def with_children(*children: dict[str, Any], postcode: str = "WX3 4AB") -> ReferralSubmitted:
    filled = [{"given_name": "Child", "gender": "not_known", **child} for child in children]
    return submission(children=filled, address={"line1": "4 Mill Lane", "postcode": postcode})


def known_by(earlier: ReferralSubmitted, family_id: str) -> KnownFamilies:
    return KnownFamilies(by_key={key.value: family_id for key in family_keys(earlier)})


def test_a_family_nobody_knows_is_new_with_the_id_it_was_given() -> None:
    request = submission()

    match = match_family(request, KnownFamilies())

    assert match.rule is FamilyMatchRule.NEW_FAMILY
    assert match.is_new
    assert match.family_id == "fam-new"


def test_a_upn_matches_even_when_name_and_address_changed() -> None:
    earlier = with_children(
        {"family_name": "Hassan", "date_of_birth": "2016-04-12", "upn": "A123456789012"}
    )
    moved = with_children(
        {"family_name": "Hassan-Ali", "date_of_birth": "2016-04-12", "upn": "a1234 5678 9012"},
        postcode="WX17 1AA",
    )

    match = match_family(moved, known_by(earlier, "fam-hassan"))

    assert (match.family_id, match.rule) == ("fam-hassan", FamilyMatchRule.UPN)


def test_an_nhs_number_matches_when_there_is_no_upn() -> None:
    earlier = with_children(
        {"family_name": "Clarke", "date_of_birth": "2013-06-02", "nhs_number": "9434765919"}
    )
    later = with_children(
        {"family_name": "Clark", "date_of_birth": "2013-06-02", "nhs_number": "943 476 5919"},
        postcode="WX7 2PL",
    )

    match = match_family(later, known_by(earlier, "fam-clarke"))

    assert (match.family_id, match.rule) == ("fam-clarke", FamilyMatchRule.NHS_NUMBER)


def test_surname_birth_date_and_postcode_match_however_written() -> None:
    earlier = with_children({"family_name": "O'Neill", "date_of_birth": "2015-01-01"})
    later = with_children(
        {"family_name": "o neill", "date_of_birth": "2015-01-01"}, postcode="wx34ab"
    )

    match = match_family(later, known_by(earlier, "fam-oneill"))

    assert (match.family_id, match.rule) == ("fam-oneill", FamilyMatchRule.SURNAME_DOB_POSTCODE)


def test_a_sibling_in_a_later_request_brings_the_whole_request_to_the_family() -> None:
    earlier = with_children({"family_name": "Hassan", "date_of_birth": "2016-04-12"})
    siblings = with_children(
        {"family_name": "Hassan", "date_of_birth": "2021-02-02"},
        {"family_name": "Hassan", "date_of_birth": "2016-04-12"},
    )

    match = match_family(siblings, known_by(earlier, "fam-hassan"))

    assert match.family_id == "fam-hassan"


def test_an_identifier_outranks_demographics_and_the_other_family_is_flagged() -> None:
    by_upn = with_children(
        {"family_name": "Smith", "date_of_birth": "2014-05-05", "upn": "H801200001001"}
    )
    by_name = with_children({"family_name": "Smith", "date_of_birth": "2014-05-05"})
    upn_key, name_key = family_keys(by_upn)
    assert family_keys(by_name) == [name_key]
    known = KnownFamilies(by_key={upn_key.value: "fam-by-upn", name_key.value: "fam-by-name"})

    match = match_family(by_upn, known)

    assert (match.family_id, match.rule) == ("fam-by-upn", FamilyMatchRule.UPN)
    assert match.other_families == ("fam-by-name",)


def test_family_keys_hold_no_identifier_in_clear() -> None:
    request = with_children(
        {"family_name": "Hassan", "date_of_birth": "2016-04-12", "upn": "A123456789012"}
    )

    keys = family_keys(request)

    assert [key.rule for key in keys] == [
        FamilyMatchRule.UPN,
        FamilyMatchRule.SURNAME_DOB_POSTCODE,
    ]
    assert not any("A123456789012" in key.value or "hassan" in key.value for key in keys)


# ---------------------------------------------------------------------------------------------
# Re-referrals

RECEIVED = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (None, False),
        (FamilyHistory("fam-1"), False),
        (FamilyHistory("fam-1", last_closed_at=datetime(2026, 1, 5, tzinfo=UTC)), True),
        (FamilyHistory("fam-1", last_closed_at=datetime(2025, 11, 22, 9, 1, tzinfo=UTC)), True),
        (FamilyHistory("fam-1", last_closed_at=datetime(2025, 11, 22, 9, 0, tzinfo=UTC)), False),
        (FamilyHistory("fam-1", last_closed_at=datetime(2024, 6, 1, tzinfo=UTC)), False),
        (
            FamilyHistory(
                "fam-1", open_cases=("case-1",), last_closed_at=datetime(2026, 9, 1, tzinfo=UTC)
            ),
            False,
        ),
    ],
)
def test_a_re_referral_is_within_twelve_months_of_the_last_closure_with_no_open_case(
    history: FamilyHistory | None, expected: bool
) -> None:
    assert is_re_referral(history, RECEIVED) is expected


def test_erasure_derives_the_same_family_keys_as_matching_for_the_same_family() -> None:
    """Erasure finds a family's rejections by the keys its children give; a second
    derivation of those keys could drift from matching's and silently find none."""
    document = submission_document()
    document["address"] = {**document["address"], "postcode": "wx3  4ab"}
    document["children"] = [
        {**document["children"][0], "upn": "a123 4567 89012"},
        {**document["children"][1], "nhs_number": "943 476 5919", "family_name": "HASSAN-Smith"},
    ]
    matching = {key.value for key in family_keys(ReferralSubmitted.model_validate(document))}

    assert len(matching) == 4  # a UPN, an NHS number, and each child's name, birth and postcode
    assert raw_family_keys(document) == matching
    assert raw_family_keys(json.loads(json.dumps(document))) == matching  # as stored, read back
