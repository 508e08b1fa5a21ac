"""The storage interface every backend implements (DuckDB embedded; PostgreSQL later).

Callers only use these methods; a batch is one transaction (all of it or none of it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
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
