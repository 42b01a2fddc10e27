"""The in-memory backend: the Redis backend's semantics, kept in this worker's memory.

For the embedded mode (``vxsandbox chat``) and fast tests. Time comes from
the reactor (``IReactorTime.seconds``), in whole milliseconds as Redis keeps
it, so tests can drive expiry with ``task.Clock``. Expired keys are dropped
when read and before a sandbox's keys are counted.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.internet.interfaces import IReactorTime

from .backend import INT64_MAX, INT64_MIN, WriteResult
from .errors import IncrementOverflowError, NotAnIntegerError, QuotaExceededError
from .keys import KeyScheme


class MemoryBackend:
    """A :class:`~vxsandbox_resources_kv.backend.KVBackend` in a dict.

    :param clock: an ``IReactorTime`` provider (the reactor, or ``task.Clock``).
    """

    def __init__(self, clock: Any, scheme: KeyScheme | None = None) -> None:
        self.clock: IReactorTime = clock
        self.scheme = scheme or KeyScheme()
        #: value name -> (JSON text, expiry in ms or None)
        self.values: dict[str, tuple[str, int | None]] = {}
        #: index name -> {key: expiry in ms, inf for none}, as the Redis sorted set
        self.indexes: dict[str, dict[str, float]] = {}

    def _now_ms(self) -> int:
        return round(self.clock.seconds() * 1000)

    async def setup(self) -> None:
        """Nothing to connect."""

    async def teardown(self) -> None:
        """Nothing to release; values live as long as the backend object."""

    def _live(self, name: str, now: int) -> tuple[str, int | None] | None:
        entry = self.values.get(name)
        # like Redis: a key expiring at T still exists at T
        if entry is not None and entry[1] is not None and now > entry[1]:
            del self.values[name]
            return None
        return entry

    def _pruned_index(self, sandbox_id: str, now: int) -> dict[str, float]:
        index = self.indexes.setdefault(self.scheme.index_key(sandbox_id), {})
        for key in [k for k, expiry in index.items() if expiry < now]:
            del index[key]
            self._live(self.scheme.data_key(sandbox_id, key), now)
        return index

    def _admit(self, sandbox_id: str, key: str, now: int, limit: int) -> tuple[dict[str, float], bool, int]:
        index = self._pruned_index(sandbox_id, now)
        exists = self._live(self.scheme.data_key(sandbox_id, key), now) is not None
        count = len(index)
        if not exists:
            if count >= limit:
                raise QuotaExceededError(count, limit)
            count += 1
        return index, not exists, count

    async def get(self, sandbox_id: str, key: str) -> str | None:
        entry = self._live(self.scheme.data_key(sandbox_id, key), self._now_ms())
        return None if entry is None else entry[0]

    async def set(self, sandbox_id: str, key: str, value: str, seconds: int | None, limit: int) -> WriteResult:
        now = self._now_ms()
        index, created, count = self._admit(sandbox_id, key, now, limit)
        expiry = None if seconds is None else now + seconds * 1000
        self.values[self.scheme.data_key(sandbox_id, key)] = (value, expiry)
        index[key] = math.inf if expiry is None else expiry
        return WriteResult(created, count)

    async def delete(self, sandbox_id: str, key: str) -> bool:
        now = self._now_ms()
        existed = self._live(self.scheme.data_key(sandbox_id, key), now) is not None
        self.values.pop(self.scheme.data_key(sandbox_id, key), None)
        self.indexes.get(self.scheme.index_key(sandbox_id), {}).pop(key, None)
        return existed

    async def incr(self, sandbox_id: str, key: str, amount: int, limit: int) -> tuple[int, WriteResult]:
        now = self._now_ms()
        name = self.scheme.data_key(sandbox_id, key)
        entry = self._live(name, now)
        current, expiry = 0, None
        if entry is not None:
            current = _stored_integer(entry[0])
            expiry = entry[1]
        new = current + amount
        if not INT64_MIN <= new <= INT64_MAX:
            raise IncrementOverflowError("increment or decrement would overflow")
        index, created, count = self._admit(sandbox_id, key, now, limit)
        self.values[name] = (json.dumps(new), expiry)
        index[key] = math.inf if expiry is None else expiry
        return new, WriteResult(created, count)

    async def count(self, sandbox_id: str) -> int:
        return len(self._pruned_index(sandbox_id, self._now_ms()))


def _stored_integer(text: str) -> int:
    # Redis's INCRBY accepts exactly the canonical decimal form of a signed 64-bit integer.
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if type(value) is not int or json.dumps(value) != text or not INT64_MIN <= value <= INT64_MAX:
        raise NotAnIntegerError("the stored value is not an integer")
    return value
