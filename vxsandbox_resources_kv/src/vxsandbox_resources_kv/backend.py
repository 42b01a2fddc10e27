"""The interface both stores (Redis and in-memory) offer the kv resource.

Values arrive and leave serialised as JSON text; a backend never parses them
except to increment a stored integer. Every write that may create a key
takes the sandbox's hard key limit and enforces it atomically with the write,
counting only keys that have not expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: Redis integers are signed 64-bit; both backends refuse to leave this range.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class WriteResult:
    """What a write did to the sandbox's key count."""

    #: the key did not exist (or had expired) before this write
    created: bool
    #: keys the sandbox holds after the write (expired keys not counted)
    count: int


class KVBackend(Protocol):
    """A key-value store namespaced by sandbox_id, with expiry and per-sandbox key counts."""

    async def setup(self) -> None:
        """Connect (or prepare) once when the worker starts."""

    async def teardown(self) -> None:
        """Release connections when the worker stops."""

    async def get(self, sandbox_id: str, key: str) -> str | None:
        """The JSON text stored at ``key``, or None when it is missing or expired."""

    async def set(self, sandbox_id: str, key: str, value: str, seconds: int | None, limit: int) -> WriteResult:
        """Store JSON text at ``key``, expiring after ``seconds`` (never when None).

        :raises QuotaExceededError: the key is new and the sandbox already holds ``limit`` keys.
        """

    async def delete(self, sandbox_id: str, key: str) -> bool:
        """Remove ``key``; True when it existed."""

    async def incr(self, sandbox_id: str, key: str, amount: int, limit: int) -> tuple[int, WriteResult]:
        """Add ``amount`` to the integer at ``key`` (0 when missing) and return the new value.

        An existing key keeps its expiry; a new one never expires.

        :raises NotAnIntegerError: the stored value is not a 64-bit integer.
        :raises IncrementOverflowError: the result would leave the 64-bit range.
        :raises QuotaExceededError: the key is new and the sandbox already holds ``limit`` keys.
        """

    async def count(self, sandbox_id: str) -> int:
        """How many unexpired keys the sandbox holds."""
