"""The fast path (msgspec spans + partial view) decides exactly as the original reader.

Oracle: the original reader (``_read_text_slow``: the json module, whole dicts). For any input,
converting the fast reader's records and the original reader's records must accept the same
records (same rid, original text, hash, facts, references, identifiers, subject) and reject the
same ones for the same reasons. The fast path runs here on *checked* views, which raise
LookupError for any element they do not decode, so code that starts reading a new element
fails this test until the element is added to ``view.READ_KEYS``/``PRESENCE_KEYS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.thread.fhir import view
from healthtwin.thread.fhir.ingest import convert_records
from healthtwin.thread.fhir.reader import _read_text_slow, read_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/fhir"
plain_view = view.decode_view  # before the fixture below swaps in checked views


@pytest.fixture(autouse=True)
def _checked_views(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view, "decode_view", view.decode_checked_view)


def _outcome(recs: list[Any], strict: bool = False) -> Any:
    try:
        acc, rej = convert_records(recs, strict=strict)
    except Exception as exc:  # both paths must fail alike on input the converter cannot take
        return ("raised", type(exc).__name__)
    return acc, [(r.locator, r.reason, r.raw, r.line, r.entry) for r in rej]


def _same(text: str, ndjson: bool | None) -> None:
    fast = list(read_text("t", text, ndjson=ndjson))
    slow = list(_read_text_slow("t", text, ndjson=ndjson))
    # well-formed input really took the fast path (views, not dicts from the json module)
    assert all(not isinstance(r.view, dict) for r in fast)
    assert [(r.locator, r.text, r.error, r.extra) for r in fast] == [
        (r.locator, r.text, r.error, r.extra) for r in slow
    ]
    assert _outcome(fast) == _outcome(slow)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "final", "2024-01-02", "2024-01-02T03:04:05Z", "yesterday", "1970"]),
    st.text(max_size=8),
)
anything = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
coding = st.fixed_dictionaries(
    {},
    optional={
        "system": st.sampled_from(["http://loinc.org", "http://snomed.info/sct", "urn:x"]),
        "code": st.sampled_from(["2339-0", "8480-6", "44054006", "", "x"]),
        "display": st.text(max_size=6),
    },
)
concept = st.fixed_dictionaries(
    {}, optional={"coding": st.lists(coding, max_size=2), "text": st.text(max_size=6)}
)
quantity = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.floats(-1e6, 1e6, width=32), st.integers(-100, 1000), st.text()),
        "unit": st.sampled_from(["mg/dL", "mmol/L", "mm[Hg]", "beats/minute", "", "kg"]),
        "code": st.sampled_from(["mg/dL", "mmol/L", "mm[Hg]", "%", "{score}", "kg"]),
        "system": st.sampled_from(["http://unitsofmeasure.org", "urn:other"]),
        "comparator": st.sampled_from(["<", ">="]),
    },
)
reference = st.fixed_dictionaries(
    {
        "reference": st.sampled_from(
            [
                "Patient/p1",
                "urn:uuid:0",
                "urn:uuid:nowhere",
                "Practitioner?identifier=urn:x|1",
                "http://example.org/fhir/Patient/7",
                "#contained",
                "not a reference",
                "Spaceship/1",
            ]
        )
    }
)
elements = {
    **{k: anything for k in view.READ_KEYS + view.PRESENCE_KEYS if k != "resourceType"},
    "id": st.one_of(st.sampled_from(["a1", "b.2", "bad id!", ""]), anything),
    "code": st.one_of(concept, anything),
    "vaccineCode": concept,
    "medicationCodeableConcept": concept,
    "verificationStatus": concept,
    "clinicalStatus": concept,
    "valueQuantity": st.one_of(quantity, anything),
    "valueCodeableConcept": concept,
    "component": st.lists(
        st.fixed_dictionaries(
            {"code": concept}, optional={"valueQuantity": quantity, "valueString": st.text()}
        ),
        max_size=2,
    ),
    "subject": st.one_of(reference, anything),
    "patient": reference,
    "identifier": st.one_of(
        st.lists(st.fixed_dictionaries({"system": st.text(max_size=3), "value": anything})),
        anything,
    ),
    "effectivePeriod": st.fixed_dictionaries({}, optional={"start": scalars, "end": scalars}),
    "extension": st.lists(st.fixed_dictionaries({"valueReference": reference}), max_size=2),
}
resources = st.builds(
    lambda rtype, parts: {"resourceType": rtype, **parts},
    st.sampled_from(
        [
            "Observation",
            "Patient",
            "Condition",
            "Encounter",
            "MedicationRequest",
            "Immunization",
            "Claim",
            "Provenance",
            "Basic",
            "Spaceship",
        ]
    ),
    st.fixed_dictionaries({}, optional=elements),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(resources, min_size=1, max_size=4))
def test_fast_path_decides_as_the_original_reader_ndjson(res: list[dict[str, Any]]) -> None:
    _same("".join(json.dumps(r) + "\n" for r in res), ndjson=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(resources, min_size=1, max_size=4), st.sampled_from([None, 2]))
def test_fast_path_decides_as_the_original_reader_bundle(
    res: list[dict[str, Any]], indent: int | None
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{i}", "resource": r, "request": {"method": "POST"}}
            for i, r in enumerate(res)
        ],
    }
    _same(json.dumps(bundle, indent=indent), ndjson=None)


def test_fast_path_decides_as_the_original_reader_on_fixtures() -> None:
    files = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".json", ".ndjson"))
    assert len(files) > 5
    for f in files:
        _same(f.read_text(encoding="utf-8"), ndjson=True if f.suffix == ".ndjson" else None)


def test_view_refuses_elements_it_does_not_decode() -> None:
    v = view.decode_checked_view(b'{"resourceType": "Patient", "id": "a", "class": []}')
    assert v.get("id") == "a" and "class" in v and v.get("class") == []
    with pytest.raises(LookupError):
        v.get("name")
    plain = plain_view(b'{"resourceType": "Patient", "name": [], "class": {"a": 1}}')
    assert plain == {"resourceType": "Patient", "class": True}
