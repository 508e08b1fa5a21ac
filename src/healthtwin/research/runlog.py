"""Journal run records of the cohort twin (simulations, design reports) in the store.

The run record a command already writes as JSON (spec, spec SHA-256, seed, code version, ...)
becomes the payload of one hash-chained journal event, so a result can be traced back to the
exact specification and code that produced it.
"""

from __future__ import annotations

from typing import Any

import orjson

from healthtwin.research.report import code_version
from healthtwin.twin.model import Event

SIMULATION_RUN = "simulation.run"
REPORT_CREATED = "report.created"
_REQUIRED = ("spec", "spec_sha256", "seed")


def journal_run(store: Any, kind: str, record: dict[str, Any], command: str) -> int:
    """Append ``record`` as a journal event of ``kind``; returns its sequence number."""
    if kind not in (SIMULATION_RUN, REPORT_CREATED):
        raise ValueError(
            f"unknown run event kind {kind!r} (use {SIMULATION_RUN!r} or {REPORT_CREATED!r})"
        )
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"run record for {kind!r} lacks {missing}")
    # JSON round trip: numpy scalars/arrays and dataclasses become plain JSON values.
    payload = orjson.loads(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY, default=str))
    payload.setdefault("code_version", code_version())
    provenance = {"command": command, "code_version": payload["code_version"], "label": "simulated"}
    seqs = store.append_events([Event(kind, payload, provenance)])
    if len(seqs) != 1:
        raise RuntimeError(f"store appended {len(seqs)} events for one {kind!r} record")
    return seqs[0]
