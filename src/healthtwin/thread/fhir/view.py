"""A fast, partial view of one FHIR resource: only the elements the fast path reads.

Decoding a whole resource into Python dicts (``json.loads``/``orjson.loads``) costs about
45 µs per Synthea resource, more than everything else ingestion does with it. The fast path
reads a few dozen top-level elements, so :func:`decode_view` decodes the resource's JSON with
msgspec into a struct holding just those (the rest of the text is scanned and syntax-checked,
never materialised): about 8 µs. Elements that are only checked for presence (required
elements) are kept as raw JSON and never decoded.

:func:`decode_view` returns a plain dict of the elements present (presence-only elements stand
in as None, [], "" or True), so the validation and normalisation code reads it at dict speed.
:func:`decode_checked_view` returns the struct itself, which answers ``get``, ``in`` and ``[]``
like that dict but raises :class:`LookupError` for any key it does not hold: the tests run the
fast path on checked views, so code that starts reading a new element fails loudly until the
element is added here, never silently seeing "absent". The full dict is ``Record.obj``.
"""

from __future__ import annotations

import keyword
from itertools import compress
from operator import is_not
from typing import Any

import msgspec

from healthtwin.thread.fhir.normalize import EFFECTIVE_KEYS

# Top-level elements the fast path reads (validate.fast_check, normalize.facts_of,
# normalize.subject_of, normalize.identifiers, ingest._rid): decoded to Python values.
READ_KEYS: tuple[str, ...] = (
    "resourceType",
    "id",
    "status",
    "code",
    "subject",
    "patient",
    "beneficiary",
    "identifier",
    "verificationStatus",
    "clinicalStatus",
    "component",
    "dataAbsentReason",
    "vaccineCode",
    "medicationCodeableConcept",
    "gender",
    "birthDate",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueDateTime",
    "valuePeriod",
    "valueRatio",
    "valueSampledData",
    *EFFECTIVE_KEYS,
)
# Elements only checked for presence (validate.REQUIRED, choice types): kept as raw JSON.
PRESENCE_KEYS: tuple[str, ...] = (
    "class",
    "intent",
    "medicationReference",
    "effectiveTiming",
    "occurrenceString",
    "content",
    "type",
    "use",
    "created",
    "provider",
    "priority",
    "insurance",
    "insurer",
    "outcome",
    "lifecycleStatus",
    "description",
    "target",
    "recorded",
    "agent",
    "scope",
    "category",
    "source",
    "entry",
)

_UNSET = msgspec.UNSET
_RAW = msgspec.Raw
_EMPTY = msgspec.Raw()


def _attr(key: str) -> str:
    return key + "_" if keyword.iskeyword(key) else key


_ATTR: dict[str, str] = {k: _attr(k) for k in (*READ_KEYS, *PRESENCE_KEYS)}
_WS = b" \t\n\r"


def _presence(raw: msgspec.Raw) -> Any:
    """Stand-in for a presence-only element: None, [], "" or True (present, not empty)."""
    b = bytes(raw)
    if b == b"null":
        return None
    if b[:1] == b"[" and b[1:].strip(_WS) == b"]":
        return []
    if b == b'""':
        return ""
    return True


class _ViewBase(msgspec.Struct):
    """Dict-like read access to the decoded elements (see the module docstring)."""

    def get(self, key: str, default: Any = None) -> Any:
        attr = _ATTR.get(key)
        if attr is None:
            raise LookupError(f"the fast-path view does not read element {key!r}")
        v = getattr(self, attr)
        if v is _UNSET:
            return default
        if type(v) is _RAW:
            return default if not v else _presence(v)
        return v

    def __contains__(self, key: object) -> bool:
        attr = _ATTR.get(str(key))
        if attr is None:
            raise LookupError(f"the fast-path view does not read element {key!r}")
        v = getattr(self, attr)
        return v is not _UNSET and not (type(v) is _RAW and not v)

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return self.get(key)


ResourceView: Any = msgspec.defstruct(
    "ResourceView",
    [(_attr(k), Any, msgspec.field(default=_UNSET, name=k)) for k in READ_KEYS]
    + [(_attr(k), msgspec.Raw, msgspec.field(default=_EMPTY, name=k)) for k in PRESENCE_KEYS],
    bases=(_ViewBase,),
)

_decoder = msgspec.json.Decoder(ResourceView)

DecodeError = msgspec.DecodeError


_astuple = msgspec.structs.astuple
_N_READ = len(READ_KEYS)
_UNSETS = (_UNSET,) * _N_READ


def decode_view(data: Any) -> dict[str, Any]:
    """The fast-path view of one resource's JSON (bytes, str or msgspec.Raw): a dict of the
    elements the fast path reads. Raises :class:`DecodeError` when the text is not well-formed
    JSON or not an object (the caller then asks ``json`` for the reason)."""
    vals = _astuple(_decoder.decode(data))
    # the set elements only, filtered at C speed (compress/map/zip, no Python-level loop)
    view = dict(compress(zip(READ_KEYS, vals, strict=False), map(is_not, vals, _UNSETS)))
    pvals = vals[_N_READ:]
    for k, v in compress(zip(PRESENCE_KEYS, pvals, strict=True), pvals):  # empty Raw: false
        view[k] = _presence(v)
    return view


def decode_checked_view(data: Any) -> Any:
    """Like :func:`decode_view`, but a struct that refuses keys it does not hold (tests)."""
    return _decoder.decode(data)
