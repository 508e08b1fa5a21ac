"""The hash chain of the journal: sealing events and verifying the chain.

Each event's hash is SHA-256 over the previous hash and the event's canonical fields, so any
altered, removed or reordered event breaks the chain from that point on. Truncation of the
newest events is detectable only against an anchor kept elsewhere: ``verify`` reports the head
hash for that purpose (``healthtwin verify --expect-head HASH``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

GENESIS = "0" * 64
SEP = "\x1f"


def seal(
    prev_hash: str,
    seq: int,
    event_id: str,
    recorded_at: datetime,
    kind: str,
    twin_id: str | None,
    subject: str | None,
    batch_id: str | None,
    payload: str,
    provenance: str,
) -> str:
    """The hash of one event given its predecessor's hash."""
    body = SEP.join(
        (
            prev_hash,
            str(seq),
            event_id,
            recorded_at.isoformat(),
            kind,
            twin_id or "",
            subject or "",
            batch_id or "",
            payload,
            provenance,
        )
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class VerifyReport:
    events: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(rows: Iterable[tuple], report: VerifyReport | None = None) -> VerifyReport:
    """Check rows (seq, event_id, recorded_at, kind, twin_id, subject, batch_id, payload,
    provenance, prev_hash, hash) in stored order."""
    rep = report or VerifyReport()
    prev, expected_seq, last_time = GENESIS, 1, None
    for row in rows:
        seq, eid, rec, kind, twin, subj, batch, payload, prov, prev_hash, h = row
        rep.events += 1
        if seq != expected_seq:
            rep.problems.append(
                f"event seq {seq}: expected seq {expected_seq} (an event was removed or reordered)"
            )
            expected_seq = seq
        if prev_hash != prev:
            rep.problems.append(f"event seq {seq}: prev_hash does not match the preceding event")
        if seal(prev_hash, seq, eid, rec, kind, twin, subj, batch, payload, prov) != h:
            rep.problems.append(f"event seq {seq}: content does not match its hash (altered)")
        if last_time is not None and rec < last_time:
            rep.problems.append(f"event seq {seq}: recorded_at goes backwards")
        last_time = rec
        prev = h
        expected_seq += 1
        if len(rep.problems) > 100:
            rep.problems.append("... stopping after 100 problems")
            break
    rep.head = prev
    return rep
