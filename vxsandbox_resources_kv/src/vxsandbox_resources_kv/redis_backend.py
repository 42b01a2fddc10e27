"""The Redis backend: values and per-sandbox key indexes in Redis, written by Lua scripts.

Every write that may create a key runs as one Lua script (EVAL), so pruning
expired keys from the sandbox's index, counting, checking the quota and
writing happen atomically and concurrent requests cannot overshoot the
limit. Expiry times come from Redis's own clock (``TIME``) and are written
with ``PXAT``, so the index's scores and the keys' expiry agree exactly
(Redis 6.2 or later).

The connection is txredisapi's lazy, reconnecting pool of one connection,
shared by every sandbox run. One pipelined connection applies requests in the
order a child sent them, as the in-memory backend does (txredisapi spreads
commands over a larger pool at random, which would reorder a child's
``set`` and ``get`` sent together); Redis runs commands one at a time anyway.
While Redis is down a command fails at once with
:class:`BackendUnavailableError` instead of queueing until the sandbox's
timeout; the pool keeps reconnecting in the background (backing off to
``reconnect_max_delay``) and commands succeed again once Redis is back.
A new connection whose AUTH or SELECT fails (a refused password, or a Redis
still stalled past ``command_timeout``) makes txredisapi stop reconnecting
for good; the backend then starts a fresh pool after ``reconnect_max_delay``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.python.failure import Failure

from .backend import WriteResult
from .config import RedisManagerConfig
from .errors import BackendUnavailableError, IncrementOverflowError, NotAnIntegerError, QuotaExceededError
from .keys import KeyScheme

log = logging.getLogger(__name__)

# KEYS[1]: the sandbox's index (sorted set of its keys, scored by expiry in ms, inf for none).
# Drops members whose expiry has passed (a key expiring at T still exists at T, as in Redis)
# and leaves the current time in ms in `now`.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
"""

# KEYS: index, value. ARGV: key, limit.  Leaves `exists` and `count` (after the write).
# Returns {-1, count} from the script when the key is new and the sandbox is full.
_ADMIT = """
local exists = redis.call('EXISTS', KEYS[2]) == 1
local count = redis.call('ZCARD', KEYS[1])
if not exists then
  if count >= tonumber(ARGV[2]) then
    return {-1, count}
  end
  count = count + 1
end
"""

# ARGV: key, limit, value, ttl in ms ('' for no expiry). Returns {created (0/1), count}.
SET_SCRIPT = _PRUNE + _ADMIT + """
local score = 'inf'
if ARGV[4] ~= '' then
  score = string.format('%d', now + tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], ARGV[3], 'PXAT', score)
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
if exists then return {0, count} end
return {1, count}
"""

# ARGV: key, limit, amount. Returns {created (0/1), count, new value as a string}, or
# {-2, error text} when INCRBY refuses (not an integer, overflow). The new value is read
# back with GET because a Lua number would round integers past 2^53.
INCR_SCRIPT = _PRUNE + _ADMIT + """
local r = redis.pcall('INCRBY', KEYS[2], ARGV[3])
if type(r) == 'table' and r.err then
  return {-2, r.err}
end
if not exists then
  redis.call('ZADD', KEYS[1], 'inf', ARGV[1])
end
local value = redis.call('GET', KEYS[2])
if exists then return {0, count, value} end
return {1, count, value}
"""

# KEYS: index, value. ARGV: key. Returns 1 when the value existed.
DELETE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""

# KEYS: index. Returns the number of unexpired keys.
COUNT_SCRIPT = _PRUNE + """
return redis.call('ZCARD', KEYS[1])
"""


class RedisBackend:
    """A :class:`~vxsandbox_resources_kv.backend.KVBackend` in Redis.

    :param config: the ``redis_manager`` options.
    :param clock: the reactor (used for timeouts).
    """

    def __init__(self, config: RedisManagerConfig, clock: Any) -> None:
        self.config = config
        self.clock = clock
        self.scheme = KeyScheme(config.key_prefix, config.key_separator)
        self.address = f"{config.host}:{config.port}/{config.db}"
        self._redis: Any = None
        self._restart: Any = None

    async def setup(self) -> None:
        """Start the shared pool and give it ``connect_timeout`` to connect (it may keep trying after)."""
        cfg = self.config
        self._redis = self._start_pool()
        factory = self._redis._factory
        waited = 0.0
        while not factory.size and waited < cfg.connect_timeout:
            await task.deferLater(self.clock, 0.05, lambda: None)
            waited += 0.05
        if not factory.size:
            # Starting anyway lets the worker serve apps that do not use kv; kv commands fail with a reason.
            log.warning("Redis at %s is not answering yet; kv commands fail until it does", self.address)

    def _start_pool(self) -> Any:
        cfg = self.config
        redis = txredisapi.lazyConnectionPool(
            host=cfg.host, port=cfg.port, dbid=cfg.db, poolsize=1, reconnect=True,
            password=cfg.password, username=cfg.username, connectTimeout=cfg.connect_timeout,
            replyTimeout=cfg.command_timeout, convertNumbers=False)
        factory = redis._factory
        factory.maxDelay = cfg.reconnect_max_delay
        factory.initialDelay = min(factory.initialDelay, cfg.reconnect_max_delay)
        # txredisapi calls this after stopping the pool for good when a new
        # connection's AUTH or SELECT fails, which includes timing out on a
        # Redis that is still stalled: replace the pool instead of giving up.
        factory.connectionError = lambda why: self._handshake_failed(redis, why)
        return redis

    def _handshake_failed(self, redis: Any, why: str) -> None:
        delay = self.config.reconnect_max_delay
        log.warning("Redis at %s: %s; starting a new connection in %s s", self.address, why, delay)
        self._restart = self.clock.callLater(delay, self._restart_pool, redis)

    def _restart_pool(self, stopped: Any) -> None:
        self._restart = None
        self._redis = self._start_pool()
        stopped.disconnect()

    async def teardown(self) -> None:
        """Close every connection and stop reconnecting."""
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.disconnect()

    async def _call(self, what: str, make: Callable[[Any], Deferred[Any]]) -> Any:
        if self._redis is None:
            raise BackendUnavailableError("the kv resource has not been set up")
        if not self._redis._factory.size:
            # The lazy pool would queue the command until a connection comes back.
            raise BackendUnavailableError(f"not connected to Redis at {self.address} (reconnecting)")
        try:
            return await _within(self.clock, self.config.command_timeout, make(self._redis))
        except (DeferredTimeoutError, txredisapi.TimeoutError):
            raise BackendUnavailableError(
                f"Redis at {self.address} did not answer {what} within {self.config.command_timeout} s") from None
        except txredisapi.ConnectionError as e:
            raise BackendUnavailableError(f"lost Redis at {self.address} during {what} ({e})") from None

    async def _eval(self, what: str, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(what, lambda r: r.eval(script, keys, [str(a) for a in args]))

    async def get(self, sandbox_id: str, key: str) -> str | None:
        result: str | None = await self._call("get", lambda r: r.get(self.scheme.data_key(sandbox_id, key)))
        return result

    async def set(self, sandbox_id: str, key: str, value: str, seconds: int | None, limit: int) -> WriteResult:
        keys = [self.scheme.index_key(sandbox_id), self.scheme.data_key(sandbox_id, key)]
        ttl = "" if seconds is None else seconds * 1000
        status, count = await self._eval("set", SET_SCRIPT, keys, [key, limit, value, ttl])
        if status == -1:
            raise QuotaExceededError(count, limit)
        return WriteResult(status == 1, count)

    async def delete(self, sandbox_id: str, key: str) -> bool:
        keys = [self.scheme.index_key(sandbox_id), self.scheme.data_key(sandbox_id, key)]
        return bool(await self._eval("delete", DELETE_SCRIPT, keys, [key]))

    async def incr(self, sandbox_id: str, key: str, amount: int, limit: int) -> tuple[int, WriteResult]:
        keys = [self.scheme.index_key(sandbox_id), self.scheme.data_key(sandbox_id, key)]
        result = await self._eval("incr", INCR_SCRIPT, keys, [key, limit, amount])
        status = result[0]
        if status == -1:
            raise QuotaExceededError(result[1], limit)
        if status == -2:
            error = str(result[1])
            if "overflow" in error:
                raise IncrementOverflowError("increment or decrement would overflow")
            raise NotAnIntegerError("the stored value is not an integer")
        return int(result[2]), WriteResult(status == 1, result[1])

    async def count(self, sandbox_id: str) -> int:
        return int(await self._eval("count", COUNT_SCRIPT, [self.scheme.index_key(sandbox_id)], []))


def _within(clock: Any, seconds: float, d: Deferred[Any]) -> Deferred[Any]:
    """``d``'s result, or a TimeoutError after ``seconds``.

    ``d`` itself is never cancelled: txredisapi's reply queue would then hand
    the late reply to an already fired Deferred.
    """
    out: Deferred[Any] = Deferred()

    def done(result: Any) -> None:
        # a reply or failure arriving after the timeout is dropped here, not left unhandled
        if out.called:
            return
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)

    def expire() -> None:
        if not out.called:
            out.errback(DeferredTimeoutError(seconds, "Redis command"))

    d.addBoth(done)
    timer = clock.callLater(seconds, expire)

    def stop(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return out.addBoth(stop)
