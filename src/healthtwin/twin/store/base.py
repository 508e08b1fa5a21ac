"""The storage interface every backend implements (DuckDB embedded; PostgreSQL later).

Callers only use these methods; a batch is one transaction (all of it or none of it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healthtwin.twin.journal import VerifyReport
from healthtwin.twin.model import Event, InboundRecord, Rejected


@dataclass
class BatchResult:
    batch_id: str
    recorded_at: datetime
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    twins_created: int = 0
    events: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    # rid -> (version, recorded_at, deleted) current after the batch, for every rid in the
    # batch's records that the store holds (unchanged ones included; a delete of an unknown
    # rid is absent): what ``SELECT ... FROM records WHERE superseded_at IS NULL`` would say
    versions: dict[str, tuple[int, datetime, bool]] = field(default_factory=dict)
    # rids of ``create_only`` records not written because they have a current version
    conflicts: set[str] = field(default_factory=set)

    # The per-record decisions every backend's write path shares (DuckDB per record and in
    # bulk, PostgreSQL), so that all write the same rows and events.
    def take_current(
        self,
        rows: Iterable[tuple[Any, ...]],
        records: Sequence[InboundRecord],
        create_only: Collection[str],
    ) -> tuple[dict[str, tuple[int, str, bool]], Sequence[InboundRecord]]:
        """From the current versions read for the batch's rids (rid, version, sha256,
        deleted, recorded_at): rid -> (version, sha256, deleted), with ``versions`` filled;
        and the records to write: create-only ones whose rid has a current version (deleted
        or not) are left out as ``conflicts`` (the caller answers them 409)."""
        current: dict[str, tuple[int, str, bool]] = {}
        for rid, ver, sha, deleted, rec_at in rows:
            current[rid] = (int(ver), str(sha), bool(deleted))
            self.versions[rid] = (int(ver), rec_at, bool(deleted))
        if create_only:
            self.conflicts = {r.rid for r in records if r.rid in create_only and r.rid in current}
            if self.conflicts:
                records = [r for r in records if r.rid not in self.conflicts]
                for rid in self.conflicts:
                    self.versions.pop(rid, None)
        return current, records

    def decide(
        self, cur: tuple[int, str, bool] | None, sha256: str, deleted: bool, rtype: str
    ) -> tuple[str, int] | None:
        """The journal event kind and new version of a record whose current version is
        ``cur`` (counted here), or None when it changes nothing: the same content as the
        current version, or a delete of what was never stored."""
        if (cur is not None and cur[1] == sha256 and cur[2] == deleted) or (
            cur is None and deleted
        ):
            self.unchanged += 1
            return None
        if deleted:
            kind = "record.deleted"
            self.deleted += 1
        elif cur is None:
            kind = "record.created"
            self.created += 1
        else:
            kind = "record.updated"
            self.updated += 1
        self.per_type[rtype] = self.per_type.get(rtype, 0) + 1
        return kind, 1 if cur is None else cur[0] + 1

    def summary(self, source: str) -> dict[str, Any]:
        """The payload of the batch's ``batch.committed`` event."""
        return {
            "source": source,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
        }


class StoreError(RuntimeError):
    """The store cannot do what was asked (e.g. unknown twin)."""


class Store(ABC):
    """Durable, auditable record of twins: journal, inbound originals, facts, quarantine."""

    @abstractmethod
    def write_batch(
        self,
        records: Sequence[InboundRecord],
        rejected: Sequence[Rejected] = (),
        events: Sequence[Event] = (),
        *,
        source: str = "",
        create_only: Collection[str] = (),
    ) -> BatchResult:
        """Write one batch atomically; identical re-ingestion is reported as unchanged.

        ``create_only``: rids that must not exist yet (FHIR create); a record whose rid has
        a current version (deleted included) is not written and is listed in
        ``BatchResult.conflicts``, decided inside the batch's transaction.
        """

    @abstractmethod
    def append_events(self, events: Sequence[Event]) -> list[int]:
        """Append events (predictions, simulations, actions, audit) to the journal."""

    @abstractmethod
    def twins(self, kind: str | None = None, search: str | None = None) -> list[dict[str, Any]]: ...

    @abstractmethod
    def twin(self, twin_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def set_sync_mode(self, twin_id: str, mode: str) -> None:
        """Change how a twin follows its subject (journaled)."""

    @abstractmethod
    def create_twin(
        self, kind: str, name: str, subject: str | None = None, sync_mode: str = "model"
    ) -> str:
        """Create a twin (e.g. a cohort) and return its id (journaled)."""

    @abstractmethod
    def state(
        self, twin_id: str, at: datetime | None = None, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Latest value per code with effective <= ``at``, as known at recorded time ``as_of``."""

    @abstractmethod
    def history(self, twin_id: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest journal events, oldest first (optionally of one kind)."""

    @abstractmethod
    def originals(self, twin_id: str | None = None, rtype: str | None = None) -> Iterator[str]:
        """The current original texts (byte-exact as received)."""

    @abstractmethod
    def iter_resources(self, rtype: str) -> Iterator[dict[str, Any]]:
        """Current resources of one type, parsed."""

    @abstractmethod
    def quarantine(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def stats(self) -> dict[str, Any]: ...

    @abstractmethod
    def verify(self) -> VerifyReport: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
