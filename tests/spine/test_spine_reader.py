"""The reader keeps each resource's original text exactly, and says where bad input is."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.thread.fhir.reader import read_text

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda c: (
        st.lists(c, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=6), c, max_size=3)
    ),
    max_leaves=8,
)
resources = st.builds(
    lambda rid, extra: {
        "resourceType": "Basic",
        "id": rid,
        **{f"x{k}": v for k, v in extra.items()},
    },
    st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True),
    st.dictionaries(st.text("abcdef", min_size=1, max_size=4), json_values, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(resources, min_size=1, max_size=5), st.sampled_from([None, 1, 2, 4]), st.booleans())
def test_bundle_entries_keep_their_exact_original_text(
    res: list[dict], indent: int | None, ensure_ascii: bool
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(res)],
    }
    text = json.dumps(bundle, indent=indent, ensure_ascii=ensure_ascii)
    recs = list(read_text("t.json", text))
    assert len(recs) == len(res)
    for i, (rec, r) in enumerate(zip(recs, res, strict=True)):
        assert rec.error is None
        assert rec.obj == r
        assert json.loads(rec.text) == r
        assert rec.text in text  # a verbatim slice of the input
        assert rec.entry == i and rec.full_url == f"urn:uuid:{i}"


@settings(max_examples=60, deadline=None)
@given(st.lists(resources, min_size=1, max_size=6), st.sets(st.integers(0, 5)))
def test_ndjson_bad_lines_are_reported_and_good_lines_kept(res: list[dict], bad: set[int]) -> None:
    lines = []
    for i, r in enumerate(res):
        lines.append('{"resourceType": "Basic", "id": ' if i in bad else json.dumps(r))
    recs = list(read_text("t.ndjson", "\n".join(lines) + "\n", ndjson=True))
    assert len(recs) == len(res)
    for i, (rec, r) in enumerate(zip(recs, res, strict=True)):
        assert rec.line == i + 1 and rec.locator == f"line {i + 1}"
        if i in bad:
            assert rec.error and rec.error.startswith("malformed JSON")
        else:
            assert rec.error is None and rec.text == lines[i] and rec.obj == r


def test_malformed_document_names_line_and_column() -> None:
    text = '{\n  "resourceType": "Bundle",\n  "entry": [\n    {"resource": {"id": 1,}}\n  ]\n}\n'
    (rec,) = read_text("broken.json", text)
    assert rec.error is not None
    assert "line 4" in rec.error and "column" in rec.error


def test_crlf_and_bom_are_handled() -> None:
    text = '\ufeff{"resourceType":"Patient","id":"a"}\r\n{"resourceType":"Patient","id":"b"}\r\n'
    recs = list(read_text("p.ndjson", text))
    assert [r.obj["id"] for r in recs if r.obj] == ["a", "b"]
    assert recs[0].text == '{"resourceType":"Patient","id":"a"}'


def test_request_only_entries_are_marked_not_dropped(fixtures) -> None:
    text = (fixtures / "fhir/r4/Bundle-bundle-transaction.json").read_text()
    recs = list(read_text("tx.json", text))
    deletes = [r for r in recs if "delete" in r.extra]
    assert deletes and all(r.obj is None for r in deletes)
    assert len(recs) == len(json.loads(text)["entry"])
