"""Tokens, roles, districts, partner keys, retention and erasure keys: the rules alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from services.referral import domain
from services.referral.domain.erasure import raw_family_keys
from services.referral.domain.partners import PartnerKey, key_hash, new_key, submission_refusal
from services.referral.domain.retention import due_for_review, years_before
from shared.auth import (
    AuthError,
    InvalidCredentials,
    Principal,
    Role,
    Rule,
    district_refusal,
    mint_token,
    refusal,
    signing_secret,
    verify_token,
)
from shared.events import PLATFORM_EVENTS
from shared.settings import ServiceSettings
from tests.auth import TEST_SECRET
from tests.factories import MATCH_KEYS
from tests.privacy import PERSONAL_FIELD, schema_fields

SECRET = TEST_SECRET.encode()
FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "referral.json").read_text()
)


def test_a_token_carries_its_subject_role_and_districts() -> None:
    token = mint_token(SECRET, sub="hos-northvale", role=Role.HEAD_OF_SERVICE, districts=["a"])
    assert verify_token(SECRET, token) == Principal(
        "hos-northvale", Role.HEAD_OF_SERVICE, frozenset({"a"})
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (mint_token(b"another-secret-" * 3, sub="x", role=Role.ADMINISTRATOR), "invalid token"),
        (
            mint_token(
                SECRET,
                sub="x",
                role=Role.ADMINISTRATOR,
                now=datetime.now(UTC) - timedelta(hours=9),
            ),
            "expired",
        ),
        (jwt.encode({"sub": "x", "role": "administrator"}, SECRET), "invalid token"),
        (jwt.encode({"sub": "x", "role": "administrator", "exp": 2**40}, "", "none"), "invalid"),
        (jwt.encode({"sub": "x", "role": "superuser", "exp": 2**40}, SECRET), "unknown role"),
        ("not.a.token", "invalid token"),
    ],
    ids=["wrong secret", "expired", "no exp", "alg none", "unknown role", "garbage"],
)
def test_a_bad_token_is_refused_saying_why(token: str, message: str) -> None:
    with pytest.raises(InvalidCredentials, match=message):
        verify_token(SECRET, token)


def test_the_secret_comes_from_the_environment_or_a_file_and_must_be_long(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(TEST_SECRET + "\n")
    assert signing_secret(ServiceSettings(auth_secret_file=secret_file)) == SECRET
    assert signing_secret(ServiceSettings.model_validate({"auth_secret": TEST_SECRET})) == SECRET
    with pytest.raises(AuthError, match="no EARLYHELP_AUTH_SECRET"):
        signing_secret(ServiceSettings())
    with pytest.raises(AuthError, match="at least 32 bytes"):
        signing_secret(ServiceSettings.model_validate({"auth_secret": "short"}))


def test_a_role_outside_the_rule_is_refused_naming_the_roles_allowed() -> None:
    rule = Rule(frozenset({Role.ADMINISTRATOR}))
    assert refusal(rule, Principal("a", Role.ADMINISTRATOR)) is None
    reason = refusal(rule, Principal("p", Role.PRACTITIONER))
    assert reason == "role practitioner may not do this; allowed: administrator"


def test_districts_limit_figures_and_county_wide_needs_every_district() -> None:
    north = Principal("pa", Role.PERFORMANCE_ANALYST, frozenset({"northvale"}))
    everywhere = Principal("pa", Role.PERFORMANCE_ANALYST, frozenset({"*"}))
    both = Principal("pa", Role.PERFORMANCE_ANALYST, frozenset({"northvale", "eastmere"}))
    known = ["northvale", "eastmere"]
    assert district_refusal(north, "northvale", known) is None
    assert "do not include eastmere" in (district_refusal(north, "eastmere", known) or "")
    assert "county-wide" in (district_refusal(north, None, known) or "")
    assert district_refusal(everywhere, None, known) is None
    assert district_refusal(both, None, known) is None


def test_a_partner_key_submits_only_its_own_partner_and_routes() -> None:
    key = PartnerKey("pk-1", "northvale-primary", frozenset({"school"}))
    assert submission_refusal(key, FIXTURE) is None
    assert "not 'wessex-police'" in (
        submission_refusal(key, {**FIXTURE, "partner_id": "wessex-police"}) or ""
    )
    assert "may not submit on route 'police'" in (
        submission_refusal(key, {**FIXTURE, "route": "police"}) or ""
    )
    # An unknown route or a missing partner is the validator's to answer, with every reason.
    assert submission_refusal(key, {**FIXTURE, "route": "carrier-pigeon"}) is None
    assert submission_refusal(key, {"route": "school"}) is None


def test_partner_keys_are_random_and_stored_as_hashes() -> None:
    first, second = new_key(), new_key()
    assert first != second
    assert len(first) > 40
    assert key_hash(first) != key_hash(second)
    assert first not in key_hash(first)


def test_a_closed_family_is_due_for_review_after_the_retention_period() -> None:
    now = datetime(2033, 3, 1, tzinfo=UTC)
    closed = {"open_cases": [], "last_closed_at": datetime(2027, 2, 28, tzinfo=UTC)}
    assert due_for_review(closed, now, 6)
    assert not due_for_review(closed, now, 7)
    assert not due_for_review({**closed, "open_cases": ["case-1"]}, now, 6)
    assert not due_for_review(
        {**closed, "last_referral_at": datetime(2028, 1, 1, tzinfo=UTC)}, now, 6
    )
    assert not due_for_review({**closed, "personal_data_erased_at": now}, now, 6)
    assert not due_for_review({"open_cases": [], "last_closed_at": None}, now, 6)
    assert years_before(datetime(2032, 2, 29, tzinfo=UTC), 6) == datetime(2026, 2, 28, tzinfo=UTC)


def test_erasure_finds_a_request_s_children_by_the_same_keys_matching_uses() -> None:
    submission = domain.parse_submission(
        {
            **FIXTURE,
            "children": [
                {**FIXTURE["children"][0], "nhs_number": "9434765919"},
                FIXTURE["children"][1],
            ],
        }
    )
    assert not isinstance(submission, list)
    raw = submission.model_dump(mode="json")
    assert raw_family_keys(raw, MATCH_KEYS) == {
        key.value for key in domain.family_keys(submission, MATCH_KEYS)
    }
    assert raw_family_keys("not a submission", MATCH_KEYS) == set()


ORGANISATIONAL = {("team-capacity-changed", "team_name")}
"""A team's name is the council's, not a family's."""


@pytest.mark.parametrize("event_type", sorted(set(PLATFORM_EVENTS.types) - {"referral-submitted"}))
def test_no_event_but_the_partner_s_request_has_a_personal_data_field(event_type: str) -> None:
    schema = PLATFORM_EVENTS.model(event_type).model_json_schema()
    fields = list(schema_fields(schema))
    assert fields, "the schema names its fields"
    personal = [
        field
        for field in fields
        if PERSONAL_FIELD.search(field.rsplit(".", 1)[-1])
        and (event_type, field.rsplit(".", 1)[-1]) not in ORGANISATIONAL
    ]
    assert personal == []


def test_the_field_check_does_find_the_partner_s_personal_data() -> None:
    schema = PLATFORM_EVENTS.model("referral-submitted").model_json_schema()
    names = {field.rsplit(".", 1)[-1] for field in schema_fields(schema)}
    assert {"given_name", "family_name", "date_of_birth", "upn", "nhs_number", "postcode"} <= {
        name for name in names if PERSONAL_FIELD.search(name)
    }
