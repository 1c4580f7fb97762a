"""What a dead letter keeps in the clear and what it seals, without a server."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.dead_letters import HANDLER_FAILED, error_code, family_of, fields_at_fault
from shared.events import RawEvent, UndecodableEvent
from shared.sealing import Sealer, Unsealable

SECRET = b"a-secret-of-at-least-thirty-two-bytes-for-tests"


class Child(BaseModel):
    surname: str
    date_of_birth: int


class Submission(BaseModel):
    children: list[Child]


def invalid(data: object) -> UndecodableEvent:
    try:
        Submission.model_validate(data)
    except ValidationError as error:
        return UndecodableEvent("invalid_data", str(error), validation=error)
    raise AssertionError("the data was valid")


def test_a_sealed_value_opens_only_with_its_key_for_its_own_record() -> None:
    sealer = Sealer(SECRET, purpose="dead letters")
    sealed = sealer.seal(b'{"surname": "Okafor"}', context="referral|t/0/7")

    assert b"Okafor" not in sealed
    assert sealer.open(sealed, context="referral|t/0/7") == b'{"surname": "Okafor"}'
    with pytest.raises(Unsealable):
        sealer.open(sealed, context="referral|t/0/8")
    with pytest.raises(Unsealable):
        Sealer(SECRET, purpose="something else").open(sealed, context="referral|t/0/7")
    with pytest.raises(Unsealable):
        Sealer(SECRET[::-1], purpose="dead letters").open(sealed, context="referral|t/0/7")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(Unsealable):
        sealer.open(tampered, context="referral|t/0/7")


def test_each_seal_is_fresh_so_equal_originals_do_not_look_equal() -> None:
    sealer = Sealer(SECRET, purpose="dead letters")

    assert sealer.seal(b"same", context="x") != sealer.seal(b"same", context="x")


def test_the_fields_at_fault_are_named_without_the_values_they_held() -> None:
    error = invalid({"children": [{"surname": 7, "date_of_birth": "Okafor-2019"}]})

    assert fields_at_fault(error) == ["children.0.date_of_birth", "children.0.surname"]
    assert "Okafor" in str(error), "the full error quotes the input: it must stay sealed"
    assert error_code(error) == "invalid_data"


def test_an_error_that_is_not_about_the_data_has_no_fields_and_its_own_code() -> None:
    assert fields_at_fault(RuntimeError("database said no")) == []
    assert error_code(RuntimeError("database said no")) == HANDLER_FAILED
    assert error_code(UndecodableEvent("unreadable", "not JSON")) == "unreadable"


def envelope_with(data: dict[str, object]) -> RawEvent:
    return RawEvent.model_validate(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "/earlyhelp/tests",
            "type": "case-closed",
            "time": "2026-11-05T00:00:00Z",
            "correlationid": "c-1",
            "schemaversion": 1,
            "data": data,
        }
    )


def test_the_family_is_known_from_the_envelope_when_it_names_one() -> None:
    assert family_of(envelope_with({"family_id": "fam-9"})) == "fam-9"
    assert family_of(envelope_with({"family_id": 9})) is None
    assert family_of(envelope_with({"case_id": "case-1"})) is None
    assert family_of(None) is None
