"""Hostile input at the front door's intake, without servers: whatever arrives, exactly one
answer (accepted, or rejected with reasons and stored), and never an exception."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.referral import domain
from services.referral.handlers import (
    MAX_REASONS,
    MAX_SUBMISSION_BYTES,
    REASON_TEXT_LIMIT,
    FrontDoor,
    Origin,
    Outcome,
    Rejected,
    receive_body,
    receive_record,
    receive_submission,
    rejection_id_for,
    rejection_id_of_bytes,
)
from services.referral.ports import Accepted
from shared import strict_json
from shared.consumer import Record, read_record
from shared.events import PLATFORM_EVENTS, ReferralSubmitted, UndecodableEvent, read_envelope
from shared.strict_json import MAX_NESTING, Unreadable, read_json
from tests.factories import MATCH_KEYS
from tests.unit.test_referral_handlers import InMemoryReferralStore, submission_document

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
POSITION = Origin("kafka:referral-submitted", "0/42", "corr-position")
"""The identity ``position_of`` gives the record at offset 42 of partition 0."""
SAMPLE = FrontDoor.sample(MATCH_KEYS)
T = TypeVar("T")

HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def receive_kafka_record(raw: bytes, store: InMemoryReferralStore) -> Outcome:
    """A ``referral-submitted`` record read by the consumer's edge, then answered."""
    record = Record("referral-submitted", 0, 42, None, raw, {})
    item = read_record(record, ReferralSubmitted, PLATFORM_EVENTS, max_bytes=MAX_SUBMISSION_BYTES)
    return run(receive_record(item, store=store, now=NOW, front_door=SAMPLE))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def valid_documents() -> list[dict[str, Any]]:
    """The fixture and the contract's own examples: every route shape the tests mutate."""
    extra: Any = ReferralSubmitted.model_config.get("json_schema_extra")
    examples: list[dict[str, Any]] = [
        {**example, "consent": {**example["consent"], "given_at": "2026-11-01T10:00:00Z"}}
        if example["consent"].get("given")
        else example
        for example in extra["examples"]
    ]
    return [submission_document(), *examples]


def paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every field path in a document, containers and leaves."""
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def get(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def put(document: Any, path: tuple[str | int, ...], value: Any) -> None:
    get(document, path[:-1])[path[-1]] = value


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=25,
)

IMPOSSIBLE_DATES = [
    "2026-02-30",
    "2025-02-29",
    "2026-13-01",
    "2026-00-10",
    "2026-04-31",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "2026-1-1",
    "12/04/2016",
    "",
]


def assert_one_answer(store: InMemoryReferralStore, outcome: Outcome) -> None:
    """Exactly one outcome, recorded as such; a rejection has reasons and is stored."""
    assert len(store.received) + len(store.rejected) == 1
    if isinstance(outcome, Accepted):
        assert [event.referral_id for event in store.received] == [outcome.referral_id]
        return
    assert isinstance(outcome, Rejected)
    assert 1 <= len(outcome.reasons) <= MAX_REASONS + 1
    for reason in outcome.reasons:
        assert isinstance(reason.field, str)
        assert reason.code
        assert reason.message
        assert len(reason.field) <= REASON_TEXT_LIMIT
        assert len(reason.message) <= REASON_TEXT_LIMIT
    assert [event.rejection_id for event in store.rejected] == [outcome.rejection_id]
    assert store.rejected[0].reasons == outcome.reasons
    assert outcome.rejection_id in store.rejections
    json.dumps(store.rejections[outcome.rejection_id].document)  # storable as it is


def stored_raw(store: InMemoryReferralStore, outcome: Rejected) -> bytes:
    return base64.b64decode(store.rejections[outcome.rejection_id].document["raw_base64"])


# ---------------------------------------------------------------------------------------------
# Documents: arbitrary JSON and mutations of valid submissions


def test_the_documents_the_mutations_start_from_are_accepted() -> None:
    for document in valid_documents():
        store = InMemoryReferralStore()
        outcome = run(
            receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
        )
        assert isinstance(outcome, Accepted), outcome


@HOSTILE
@given(json_values)
def test_any_json_value_is_answered_once(document: Any) -> None:
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert isinstance(outcome, Rejected)
    assert_one_answer(store, outcome)


@st.composite
def mutations(draw: st.DrawFn) -> tuple[dict[str, Any], str, tuple[str | int, ...]]:
    """A valid submission with one hostile change, and which change and where."""
    document = copy.deepcopy(draw(st.sampled_from(valid_documents())))
    kind = draw(
        st.sampled_from(
            ["drop", "unknown_field", "wrong_type", "huge_string", "impossible_date", "route"]
        )
    )
    everywhere = paths(document)
    if kind == "drop":
        path = draw(st.sampled_from([p for p in everywhere if isinstance(p[-1], str)]))
        del get(document, path[:-1])[path[-1]]
    elif kind == "unknown_field":
        objects = [()] + [p for p in everywhere if isinstance(get(document, p), dict)]
        parent = draw(st.sampled_from(objects))
        name = draw(
            st.text(min_size=1, max_size=30).filter(lambda n: n not in get(document, parent))
        )
        path = (*parent, name)
        get(document, parent)[name] = draw(json_values)
    elif kind == "wrong_type":
        path = draw(st.sampled_from(everywhere))
        original = get(document, path)
        put(document, path, {"unexpected": 1} if isinstance(original, list) else [{"x": 1}])
    elif kind == "huge_string":
        path = draw(st.sampled_from([p for p in everywhere if isinstance(get(document, p), str)]))
        put(document, path, draw(st.sampled_from("xé🙂")) * draw(st.sampled_from([5_001, 100_000])))
    elif kind == "impossible_date":
        path = draw(
            st.sampled_from([p for p in everywhere if p[-1] in ("date_of_birth", "given_at")])
        )
        put(document, path, draw(st.sampled_from(IMPOSSIBLE_DATES)))
    else:
        path = ("route",)
        document["route"] = draw(
            st.text(min_size=1, max_size=100).filter(lambda route: route not in domain.ROUTES)
        )
    return document, kind, path


@HOSTILE
@given(mutations())
def test_a_mutated_submission_is_answered_once_and_rejected_where_it_is_wrong(
    mutation: tuple[dict[str, Any], str, tuple[str | int, ...]],
) -> None:
    document, kind, path = mutation
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert_one_answer(store, outcome)
    if kind == "drop":
        return  # an optional field may go
    assert isinstance(outcome, Rejected), (kind, path)
    where = dotted(path)
    if kind == "route":
        [reason] = [r for r in outcome.reasons if r.code == "unknown_route"]
        assert reason.field == "route"
        assert all(route in reason.message for route in domain.ROUTES)
    else:
        assert any(
            reason.field == where or reason.field.startswith(f"{where}.")
            for reason in outcome.reasons
        ), (where, outcome.reasons)
    stored = store.rejections[outcome.rejection_id].document
    if not stored["submission_truncated"]:
        assert json.loads(stored["submission_json"]) == document


def test_thousands_of_unknown_fields_give_a_bounded_rejection() -> None:
    document = {**submission_document(), **{f"field_{n}": n for n in range(20_000)}}
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert isinstance(outcome, Rejected)
    assert len(outcome.reasons) == MAX_REASONS + 1
    assert outcome.reasons[-1].code == "too_many_problems"
    assert outcome.reasons[-1].message == f"{20_000 - MAX_REASONS} more problems not listed"
    assert len(store.rejected[0].model_dump_json()) < 50_000


def test_a_huge_unknown_field_name_is_shortened_in_the_reason() -> None:
    document = {**submission_document(), "k" * 100_000: 1}
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert isinstance(outcome, Rejected)
    [reason] = outcome.reasons
    assert reason.code == "extra_forbidden"
    assert reason.field.startswith("kkk")
    assert reason.field.endswith("...")
    assert len(reason.field) == REASON_TEXT_LIMIT


def test_more_children_than_a_family_has_are_rejected() -> None:
    document = submission_document()
    document["children"] = [document["children"][1]] * (domain.MAX_CHILDREN + 1)
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert isinstance(outcome, Rejected)
    assert [(r.field, r.code) for r in outcome.reasons] == [("children", "too_many_children")]


@pytest.mark.parametrize(("name", "limit"), sorted(domain.OVERRIDE_TEXT_LIMITS.items()))
def test_an_overlong_safeguarding_override_is_rejected(name: str, limit: int) -> None:
    override = {"lawful_basis": "Children Act 1989 s.47", "recorded_by": "DS Kim Lowe"}
    document = {
        **submission_document(),
        "consent": {"given": False, "safeguarding_override": {**override, name: "x" * (limit + 1)}},
    }
    store = InMemoryReferralStore()

    outcome = run(
        receive_submission(document, origin=POSITION, store=store, now=NOW, front_door=SAMPLE)
    )

    assert isinstance(outcome, Rejected)
    assert [(r.field, r.code) for r in outcome.reasons] == [
        (f"consent.safeguarding_override.{name}", "too_long")
    ]


# ---------------------------------------------------------------------------------------------
# Bytes: the strict reader, HTTP bodies and Kafka records

invalid_utf8 = st.tuples(
    st.binary(max_size=100), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])
)


def deeply_nested(depth: int, opener: bytes) -> bytes:
    """``depth`` arrays (``[[[1]]]``) or objects (``{"a":{"a":1}}``) one inside another."""
    if opener == b"[":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[" * 100_000, "too_deep"),
        (deeply_nested(40_000, b"{"), "too_deep"),
        (deeply_nested(MAX_NESTING + 1, b"["), "too_deep"),
        (b'{"level_of_need": NaN}', "unreadable"),
        (b'{"level_of_need": -Infinity}', "unreadable"),
        (b'{"level_of_need": 1e400}', "unreadable"),
        (b'{"level_of_need": ' + b"9" * 5_000 + b"}", "unreadable"),
        (b'{"route": "school", "route": "police"}', "unreadable"),
        (b'{"route": "\\ud800"}', "unreadable"),
        (b'{"\\udfff": 1}', "unreadable"),
        ("\ufeff{}".encode(), "unreadable"),
        ('{"route": "école"}'.encode("utf-16"), "unreadable"),
        (b"x" * (MAX_SUBMISSION_BYTES + 1), "too_large"),
    ],
)
def test_the_strict_reader_refuses_what_json_loads_would_crash_on_or_guess(
    raw: bytes, code: str
) -> None:
    with pytest.raises(Unreadable) as refused:
        read_json(raw, max_bytes=MAX_SUBMISSION_BYTES)

    assert refused.value.code == code


def test_the_strict_reader_reads_json_nested_to_the_limit() -> None:
    assert read_json(deeply_nested(MAX_NESTING, b"[")) is not None
    assert read_json(b'{"a": "\\ud83d\\ude42", "b": 1.5e300}') == {"a": "🙂", "b": 1.5e300}


def verdict(read: Any) -> object:
    try:
        return ("read", read())
    except Unreadable as refused:
        return ("refused", refused.code)


json_leaves = st.sampled_from(
    ['"\\ud800"', '"\\uDFFF"', '"\\ud83d\\ude42"', '"\\\\ud800"', '"[{"', "1", "null", '"a"']
)
json_texts = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: f"[{','.join(items)}]")
        | st.lists(inner, max_size=3).map(
            lambda items: "{" + ",".join(f'"k{n}":{item}' for n, item in enumerate(items)) + "}"
        )
    ),
    max_leaves=20,
)
nested_texts = st.tuples(st.integers(MAX_NESTING - 3, MAX_NESTING + 3), json_leaves).map(
    lambda pair: "[" * pair[0] + pair[1] + "]" * pair[0]
)


@HOSTILE
@given(json_texts | nested_texts)
def test_the_strict_reader_s_shortcut_gives_the_verdict_of_walking_every_value(text: str) -> None:
    raw = text.encode()

    def walked() -> Any:
        document = read_json(raw)
        strict_json._check_shape(document)  # what the reader skips when it cannot find
        return document

    assert verdict(lambda: read_json(raw)) == verdict(walked)


@HOSTILE
@given(st.binary(max_size=2_000) | invalid_utf8.map(lambda parts: parts[0] + parts[1]))
def test_any_bytes_over_http_are_answered_once_and_kept(raw: bytes) -> None:
    store = InMemoryReferralStore()

    outcome = run(receive_body(raw, origin=POSITION, store=store, now=NOW, front_door=SAMPLE))

    assert isinstance(outcome, Rejected)
    assert_one_answer(store, outcome)
    stored = store.rejections[outcome.rejection_id].document
    try:
        document = read_json(raw, max_bytes=MAX_SUBMISSION_BYTES)
    except Unreadable:  # kept as the bytes that came
        assert stored_raw(store, outcome) == raw
    else:  # read, then refused by the rules: kept as the JSON it was
        assert json.loads(stored["submission_json"]) == document


@HOSTILE
@given(json_values.map(lambda value: json.dumps(value).encode()))
def test_any_json_body_is_answered_once(raw: bytes) -> None:
    store = InMemoryReferralStore()

    outcome = run(receive_body(raw, origin=POSITION, store=store, now=NOW, front_door=SAMPLE))

    assert isinstance(outcome, Rejected)
    assert_one_answer(store, outcome)


def envelope(data: Any, **changes: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "evt-7",
            "source": "/partners/northvale-primary",
            "type": "referral-submitted",
            "time": "2026-11-03T09:00:00Z",
            "correlationid": "corr-7",
            "schemaversion": 1,
            "data": data,
            **changes,
        }
    ).encode()


ENVELOPE_ORIGIN = Origin("/partners/northvale-primary", "evt-7", "corr-7")

kafka_records = st.one_of(
    st.binary(max_size=2_000),
    invalid_utf8.map(lambda parts: parts[0] + parts[1]),
    st.integers(MAX_NESTING + 1, 50_000).map(lambda depth: deeply_nested(depth, b"[")),
    json_values.map(lambda value: json.dumps(value).encode()),
    json_values.map(envelope),
    mutations().map(lambda mutation: envelope(mutation[0])),
    st.tuples(json_values, st.text(max_size=30)).map(lambda pair: envelope(pair[0], type=pair[1])),
    st.integers(2, 10**6).map(
        lambda version: envelope(submission_document(), schemaversion=version)
    ),
)


@HOSTILE
@given(kafka_records)
def test_any_kafka_record_is_answered_once(raw: bytes) -> None:
    store = InMemoryReferralStore()

    outcome = receive_kafka_record(raw, store)

    assert_one_answer(store, outcome)
    if not isinstance(outcome, Rejected):
        return
    stored = store.rejections[outcome.rejection_id].document
    if len(raw) > MAX_SUBMISSION_BYTES:  # the head, the size and the digest
        assert outcome.rejection_id == rejection_id_of_bytes(raw)
        assert stored_raw(store, outcome) == raw[:MAX_SUBMISSION_BYTES]
        assert (stored["raw_size"], stored["raw_truncated"]) == (len(raw), True)
        return
    try:
        sent = read_envelope(raw, max_bytes=MAX_SUBMISSION_BYTES)
    except UndecodableEvent:  # no envelope: answered as for its bytes
        assert outcome.rejection_id == rejection_id_of_bytes(raw)
        assert stored_raw(store, outcome) == raw
        return
    if (sent.type, sent.schemaversion) == (ReferralSubmitted.event_type, 1):
        assert outcome.rejection_id == rejection_id_for(sent.data)
        assert json.loads(stored["submission_json"]) == sent.data  # the data, as JSON text
    else:  # another type or version: the bytes whole
        assert outcome.rejection_id == rejection_id_of_bytes(raw)
        assert stored_raw(store, outcome) == raw


def test_an_oversize_kafka_record_is_rejected_too_large_with_its_head_kept() -> None:
    raw = envelope(submission_document(), padding="x" * 1_000_000)
    store = InMemoryReferralStore()

    outcome = receive_kafka_record(raw, store)

    assert isinstance(outcome, Rejected)
    assert [(r.field, r.code) for r in outcome.reasons] == [("", "too_large")]
    assert outcome.rejection_id == rejection_id_of_bytes(raw)
    stored = store.rejections[outcome.rejection_id].document
    assert stored_raw(store, outcome) == raw[:MAX_SUBMISSION_BYTES]
    assert (stored["raw_size"], stored["raw_truncated"]) == (len(raw), True)
    assert stored["raw_sha256"] == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"type": "case-closed"}, "unexpected_event_type"),
        ({"schemaversion": 2}, "unsupported_schema_version"),
    ],
)
def test_a_valid_submission_in_the_wrong_envelope_is_rejected_with_its_bytes(
    changes: dict[str, Any], code: str
) -> None:
    raw = envelope(submission_document(), **changes)
    store = InMemoryReferralStore()

    outcome = receive_kafka_record(raw, store)

    assert isinstance(outcome, Rejected)
    assert [(r.field, r.code) for r in outcome.reasons] == [("", code)]
    assert outcome.rejection_id == rejection_id_of_bytes(raw)
    assert stored_raw(store, outcome) == raw


def test_a_good_record_after_hostile_ones_is_accepted() -> None:
    store = InMemoryReferralStore()
    for raw in (b"[" * 100_000, b"\xff", envelope({"route": 1}), envelope(submission_document())):
        receive_kafka_record(raw, store)

    assert len(store.received) == 1
    assert store.received[0].submission_id == "np-2026-0001"
