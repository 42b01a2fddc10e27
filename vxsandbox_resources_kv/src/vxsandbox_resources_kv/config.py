"""Options of the kv resource: backend, Redis connection, key quotas and size limits.

The field lists are the configuration reference (the README repeats them
with examples).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from vxsandbox_core import Config, ConfigError, Field

log = logging.getLogger(__name__)

KiB = 1024


def _positive_int(value: int) -> int:
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("expected a positive number")
    return value


def _backend(value: str) -> str:
    if value not in ("redis", "memory"):
        raise ValueError("expected 'redis' or 'memory'")
    return value


def _redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "redis":
        raise ValueError("expected a redis://[:password@]host[:port][/db] URL")
    try:
        parts.port  # noqa: B018 -- urlsplit only checks the port when asked
    except ValueError:
        raise ValueError("the URL's port is not a number") from None
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError("the URL's path must be a database number, e.g. /0")
    return value


class RedisManagerConfig(Config):
    """The ``redis_manager`` mapping: where Redis is and how long to wait for it."""

    url: str
    key_prefix: str
    connect_timeout: float
    command_timeout: float
    reconnect_max_delay: float

    fields = (
        Field("url", (str,), "Redis to use: redis://[:password@]host[:port][/db]",
              "redis://127.0.0.1:6379/0", _redis_url),
        Field("key_prefix", (str,), "prefix of every key this resource writes (followed by ':')", ""),
        Field("connect_timeout", (int, float), "seconds to wait for a connection to Redis", 5, _positive),
        Field("command_timeout", (int, float),
              "seconds a command may wait for Redis before failing with 'kv backend unavailable'", 5, _positive),
        Field("reconnect_max_delay", (int, float),
              "most seconds between attempts to reconnect to Redis while it is down", 5, _positive),
    )

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "") -> None:
        super().__init__(raw, prefix)
        unknown = sorted(set(self.raw) - {f.name for f in self.all_fields()})
        if unknown:
            raise ConfigError(prefix + unknown[0], f"is not an option of redis_manager "
                                                   f"(options: {', '.join(f.name for f in self.all_fields())})")
        parts = urlsplit(self.url)
        self.host: str = parts.hostname or "127.0.0.1"
        self.port: int = parts.port or 6379
        self.db: int = int(parts.path.lstrip("/") or 0)
        self.password: str | None = unquote(parts.password) if parts.password else None
        self.username: str | None = unquote(parts.username) if parts.username else None


class KVConfig(Config):
    """Config of the ``kv`` resource (the mapping under ``sandbox.<name>``)."""

    backend: str
    redis_manager: dict[str, Any]
    keys_per_user_hard: int
    keys_per_user: int | None
    keys_per_user_soft: int
    max_key_length: int
    max_value_size: int

    fields = (
        Field("cls", (str,), "the resource class: kv", "kv"),
        Field("backend", (str,), "where values live: 'redis' (shared, durable) or 'memory' (this worker only)",
              "redis", _backend),
        Field("redis_manager", (dict,), "Redis connection (backend redis): {url, key_prefix, connect_timeout, "
              "command_timeout, reconnect_max_delay}", dict),
        Field("keys_per_user_hard", (int,), "most keys one sandbox_id may hold; a new key past it fails "
              "with 'Too many keys'", 100, _positive_int),
        Field("keys_per_user", (int,), "deprecated synonym of keys_per_user_hard", None, _positive_int),
        Field("keys_per_user_soft", (int, type(None)), "key count whose crossing logs one warning to the "
              "operator and the owner (default 80% of keys_per_user_hard)", None, _positive_int),
        Field("max_key_length", (int,), "most bytes (UTF-8) in a key", 1 * KiB, _positive_int),
        Field("max_value_size", (int,), "most bytes in a value, serialised as JSON", 256 * KiB, _positive_int),
    )

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "") -> None:
        super().__init__(raw, prefix)
        if self.keys_per_user is not None:
            if "keys_per_user_hard" in self.raw and self.keys_per_user_hard != self.keys_per_user:
                raise ConfigError(prefix + "keys_per_user",
                                  f"is a deprecated synonym of keys_per_user_hard and disagrees with it "
                                  f"({self.keys_per_user} vs {self.keys_per_user_hard}); keep only "
                                  "keys_per_user_hard")
            log.warning("config key %r is deprecated: use %r instead",
                        prefix + "keys_per_user", prefix + "keys_per_user_hard")
            self.keys_per_user_hard = self.keys_per_user
        if self.keys_per_user_soft is None:
            self.keys_per_user_soft = self.keys_per_user_hard * 4 // 5
        elif self.keys_per_user_soft > self.keys_per_user_hard:
            raise ConfigError(prefix + "keys_per_user_soft",
                              f"({self.keys_per_user_soft}) must not exceed keys_per_user_hard "
                              f"({self.keys_per_user_hard})")
        self.redis = RedisManagerConfig(self.redis_manager, prefix + "redis_manager.")
