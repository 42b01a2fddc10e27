"""The ``kv`` resource: per-sandbox key-value storage with expiry, counters and key quotas.

Commands (fields as in the seed): ``set`` (key, value, seconds), ``get``
(key), ``delete`` (key) and ``incr`` (key, amount). A bad field fails the
request with a reason naming it; a store that cannot be reached fails it
with ``kv backend unavailable: ...``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from vxsandbox_core import CommandError, SandboxResource
from vxsandbox_core.protocol import Command

from .backend import INT64_MAX, INT64_MIN, KVBackend, WriteResult
from .config import KVConfig
from .errors import BackendUnavailableError, IncrementOverflowError, NotAnIntegerError, QuotaExceededError
from .keys import KeyScheme
from .memory import MemoryBackend
from .redis_backend import RedisBackend

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi

#: the longest expiry accepted (a hundred years), far inside what Redis can represent
MAX_SECONDS = 100 * 365 * 24 * 3600

_MISSING = object()


class RedisResource(SandboxResource):
    """Key-value storage for sandboxes, in Redis (``backend: redis``) or in memory (``backend: memory``).

    Each sandbox_id sees only its own keys. Options are those of
    :class:`~vxsandbox_resources_kv.config.KVConfig`.
    """

    CONFIG_CLASS = KVConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")
        clock = getattr(worker, "reactor", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self.backend: KVBackend
        if self.options.backend == "memory":
            redis = self.options.redis
            self.backend = MemoryBackend(clock, KeyScheme(redis.key_prefix, redis.key_separator))
        else:
            self.backend = RedisBackend(self.options.redis, clock)

    async def setup(self) -> None:
        """Connect the backend; one pool serves every sandbox run."""
        await self.backend.setup()

    async def teardown(self) -> None:
        """Close the backend's connections."""
        await self.backend.teardown()

    # --- commands -------------------------------------------------------------------

    async def handle_set(self, api: SandboxApi, command: Command) -> Command:
        """Store ``value`` (any JSON) at ``key``, expiring after ``seconds`` (integer or null)."""
        key = self._key(command)
        value = self._value(command)
        seconds = self._seconds(command)
        result = await self._write(api, key, lambda limit: self.backend.set(api.sandbox_id, key, value, seconds,
                                                                           limit))
        self._warn_past_soft(api, key, result)
        return self.reply(command)

    async def handle_get(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``value`` stored at ``key``, null when it is missing or expired."""
        key = self._key(command)
        text = await self._backend_call(self.backend.get(api.sandbox_id, key))
        return self.reply(command, value=None if text is None else json.loads(text))

    async def handle_delete(self, api: SandboxApi, command: Command) -> Command:
        """Remove ``key``; the reply's ``existed`` says whether it was there."""
        key = self._key(command)
        existed = await self._backend_call(self.backend.delete(api.sandbox_id, key))
        return self.reply(command, existed=existed)

    async def handle_incr(self, api: SandboxApi, command: Command) -> Command:
        """Add ``amount`` (integer, default 1) to the integer at ``key``; the reply's ``value`` is the sum."""
        key = self._key(command)
        amount = command.get("amount", 1)
        if not _is_int(amount):
            raise CommandError(f"'amount' must be an integer, got {_describe(amount)}")
        if not INT64_MIN <= amount <= INT64_MAX:
            raise CommandError(f"'amount' must be a signed 64-bit integer, got {amount}")
        try:
            new_value, result = await self._write(
                api, key, lambda limit: self.backend.incr(api.sandbox_id, key, amount, limit))
        except NotAnIntegerError:
            raise CommandError(f"cannot incr 'key' {key!r}: its stored value is not an integer") from None
        except IncrementOverflowError:
            raise CommandError(f"cannot incr 'key' {key!r} by {amount}: the result would not fit "
                               "in a signed 64-bit integer") from None
        self._warn_past_soft(api, key, result)
        return self.reply(command, value=new_value)

    # --- fields ---------------------------------------------------------------------

    def _key(self, command: Command) -> str:
        key = command.get("key", _MISSING)
        if key is _MISSING:
            raise CommandError("'key' is required (a string)")
        if not isinstance(key, str):
            raise CommandError(f"'key' must be a string, got {_describe(key)}")
        if not key:
            raise CommandError("'key' must not be empty")
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise CommandError(f"'key' is not valid Unicode: it contains a lone surrogate "
                               f"({key[e.start]!r}) at character {e.start}") from None
        if size > self.options.max_key_length:
            raise CommandError(f"'key' is {size} bytes long; the limit is {self.options.max_key_length} "
                               "bytes (max_key_length)")
        return key

    def _value(self, command: Command) -> str:
        if "value" not in command:
            raise CommandError("'value' is required (any JSON value; null is allowed)")
        try:
            text = json.dumps(command["value"], ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            raise CommandError("'value' must be plain JSON (NaN and Infinity are not allowed)") from None
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate cannot be stored as UTF-8; its \u escape keeps the value intact.
            text = json.dumps(command["value"], allow_nan=False, separators=(",", ":"))
            size = len(text)
        if size > self.options.max_value_size:
            raise CommandError(f"'value' is {size} bytes as JSON; the limit is {self.options.max_value_size} "
                               "bytes (max_value_size)")
        return text

    def _seconds(self, command: Command) -> int | None:
        seconds = command.get("seconds")
        if seconds is None:
            return None
        if not _is_int(seconds):
            raise CommandError(f"'seconds' must be an integer or null, got {_describe(seconds)}")
        if not 0 < seconds <= MAX_SECONDS:
            raise CommandError(f"'seconds' must be between 1 and {MAX_SECONDS} (or null for no expiry), "
                               f"got {seconds}")
        return seconds

    # --- backend calls --------------------------------------------------------------

    async def _backend_call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except BackendUnavailableError as e:
            raise CommandError(f"kv backend unavailable: {e}") from None

    async def _write(self, api: SandboxApi, key: str, write: Any) -> Any:
        limit = self.options.keys_per_user_hard
        try:
            return await self._backend_call(write(limit))
        except QuotaExceededError as e:
            reason = f"Too many keys: {e} (keys_per_user_hard); cannot add 'key' {key!r}"
            api.report(f"kv: {reason}", logging.WARNING)
            raise CommandError(reason) from None

    def _warn_past_soft(self, api: SandboxApi, key: str, result: WriteResult) -> None:
        soft = self.options.keys_per_user_soft
        # Only the write that takes the count from soft to soft + 1 warns: toolkit apps add a
        # key per end user, so a warning per key past the mark would flood both logs.
        if result.created and result.count == soft + 1:
            api.report(f"kv: sandbox {api.sandbox_id!r} now has {result.count} keys (after adding {key!r}), "
                       f"past the soft limit of {soft} (keys_per_user_soft); at the hard limit of "
                       f"{self.options.keys_per_user_hard} (keys_per_user_hard) new keys fail", logging.WARNING)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_json_type(value)} {text}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
