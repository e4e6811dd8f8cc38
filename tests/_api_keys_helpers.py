"""Shared helpers of the api_keys tests: a settable clock and a store that counts calls."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from gennet_toolkit.api_keys import KeyRecord, MemoryKeyStore

PEPPER = "test-pepper-0123456789abcdef"


class FakeClock:
    """An aware UTC clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingStore(MemoryKeyStore):
    """A memory store recording how often each method is called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def get(self, key_id: str) -> KeyRecord | None:
        self.calls["get"] += 1
        return await super().get(key_id)

    async def touch(self, key_id: str, when: datetime, not_since: datetime) -> bool:
        self.calls["touch"] += 1
        return await super().touch(key_id, when, not_since)
