"""Long-lived server services: read model queries, change feed, rate limits, exports."""

from __future__ import annotations

from healthtwin.serve.gateway import StoreGateway
from healthtwin.serve.settings import Settings


class Services:
    """What the routes share beyond the store gateway."""

    def __init__(self, settings: Settings, gateway: StoreGateway) -> None:
        self.settings = settings
        self.gateway = gateway

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def subject_of(self, rid: str) -> tuple[bool, str | None]:
        """(exists, patient compartment) of a current resource ``Type/id``."""
        from healthtwin.serve import queries

        return await self.gateway.call(queries.subject_of, self.gateway.store, rid)
