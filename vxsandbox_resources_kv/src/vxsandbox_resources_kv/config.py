"""Options of the kv resource: backend, Redis connection, key quotas and size limits.

The field lists are the configuration reference (the README repeats them
with examples).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from vxsandbox_core import Config, ConfigError, Field, ResourceConfig
from vxsandbox_core.config import positive
from vxsandbox_core.errors import raise_config_errors

KiB = 1024


def backend_name(value: str) -> str:
    """Validate a ``backend`` option: where a Redis-layer resource keeps its data ('redis' or 'memory')."""
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


def _port(value: int) -> int:
    if not 0 < value <= 65535:
        raise ValueError("expected a TCP port number from 1 to 65535")
    return value


def _db(value: int) -> int:
    if value < 0:
        raise ValueError("expected a database number, 0 or more")
    return value


def _separator(value: str) -> str:
    if not value:
        raise ValueError("expected at least one character")
    return value


class RedisManagerConfig(Config):
    """The ``redis_manager`` mapping: where Redis is and how long to wait for it.

    Redis is named either by ``url`` or, as Vumi's redis_manager did, by
    ``host``, ``port``, ``db`` and ``password``; not both.
    """

    url: str | None
    host: str | None
    port: int | None
    db: int | None
    password: str | None
    key_prefix: str
    key_separator: str
    connect_timeout: float
    command_timeout: float
    reconnect_max_delay: float

    fields = (
        Field("url", (str, type(None)), "Redis to use: redis://[:password@]host[:port][/db] (default "
              "redis://127.0.0.1:6379/0 unless host, port, db or password is given)", None, _redis_url),
        Field("host", (str, type(None)), "Redis host, as Vumi's redis_manager named it (instead of url)", None),
        Field("port", (int, type(None)), "Redis port, as Vumi's redis_manager named it (instead of url)",
              None, _port),
        Field("db", (int, type(None)), "Redis database number, as Vumi's redis_manager named it (instead of url)",
              None, _db),
        Field("password", (str, type(None)), "Redis password, as Vumi's redis_manager named it (instead of url)",
              None),
        Field("key_prefix", (str,), "prefix of every key this resource writes (followed by key_separator)", ""),
        Field("key_separator", (str,), "what follows key_prefix in every key, as in Vumi's redis_manager", ":",
              _separator),
        Field("connect_timeout", (int, float), "seconds to wait for a connection to Redis", 5, positive),
        Field("command_timeout", (int, float),
              "seconds a command may wait for Redis before failing with 'kv backend unavailable'", 5, positive),
        Field("reconnect_max_delay", (int, float),
              "most seconds between attempts to reconnect to Redis while it is down", 5, positive),
    )

    deprecated_keys: ClassVar[dict[str, str]] = {
        "FAKE_REDIS": "use 'backend: memory' on the kv resource (the resource switches to it)",
        "charset": "ignored: values are always stored as UTF-8 JSON",
        "errors": "ignored: values are always stored as UTF-8 JSON, and text that is not valid is refused",
    }

    def validate(self) -> None:
        """Work out the Redis address from ``url`` or the Vumi-style keys."""
        super().validate()
        vumi_style = [k for k in ("host", "port", "db", "password") if getattr(self, k) is not None]
        if self.url is not None and vumi_style:
            raise ConfigError(self.prefix + vumi_style[0], f"gives Redis's address a second way, and 'url' "
                                                          f"({self.url!r}) gives it already: keep one of them")
        parts = urlsplit(self.url or "redis://127.0.0.1:6379/0")
        self.host = self.host or parts.hostname or "127.0.0.1"
        self.port = self.port or parts.port or 6379
        if self.db is None:
            self.db = int(parts.path.lstrip("/") or 0)
        if self.password is None and parts.password:
            self.password = unquote(parts.password)
        self.username: str | None = unquote(parts.username) if parts.username else None


class KVConfig(ResourceConfig):
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
              "redis", backend_name),
        Field("redis_manager", (dict,), "Redis connection (backend redis): {url (or host, port, db, password), "
              "key_prefix, key_separator, connect_timeout, command_timeout, reconnect_max_delay}", dict),
        Field("keys_per_user_hard", (int,), "most keys one sandbox_id may hold; a new key past it fails "
              "with 'Too many keys'", 100, positive),
        Field("keys_per_user", (int,), "deprecated synonym of keys_per_user_hard", None, positive),
        Field("keys_per_user_soft", (int, type(None)), "key count whose crossing logs one warning to the "
              "operator and the owner (default 80% of keys_per_user_hard)", None, positive),
        Field("max_key_length", (int,), "most bytes (UTF-8) in a key", 1 * KiB, positive),
        Field("max_value_size", (int,), "most bytes in a value, serialised as JSON", 256 * KiB, positive),
    )

    def validate(self) -> None:
        """Settle the key quotas and build the ``redis_manager`` options."""
        super().validate()
        prefix = self.prefix
        errors: list[ConfigError] = []
        if self.keys_per_user is not None:
            if "keys_per_user_hard" in self.raw and self.keys_per_user_hard != self.keys_per_user:
                errors.append(ConfigError(
                    prefix + "keys_per_user", f"is a deprecated synonym of keys_per_user_hard and disagrees "
                    f"with it ({self.keys_per_user} vs {self.keys_per_user_hard}); keep only keys_per_user_hard"))
            else:
                self.warn(f"config key {prefix + 'keys_per_user'!r} is deprecated: use "
                          f"{prefix + 'keys_per_user_hard'!r} instead")
                self.keys_per_user_hard = self.keys_per_user
        if self.keys_per_user_soft is None:
            self.keys_per_user_soft = self.keys_per_user_hard * 4 // 5
        elif self.keys_per_user_soft > self.keys_per_user_hard:
            errors.append(ConfigError(prefix + "keys_per_user_soft",
                                      f"({self.keys_per_user_soft}) must not exceed keys_per_user_hard "
                                      f"({self.keys_per_user_hard})"))
        try:
            self.redis = RedisManagerConfig(self.redis_manager, prefix + "redis_manager.")
            self.warnings.extend(self.redis.warnings)
            if "FAKE_REDIS" in self.redis_manager:
                if "backend" in self.raw and self.backend != "memory":
                    errors.append(ConfigError(prefix + "redis_manager.FAKE_REDIS",
                                              f"asks for Vumi's fake (in-memory) Redis, but 'backend' is "
                                              f"{self.backend!r}: keep only 'backend'"))
                self.backend = "memory"
        except ConfigError as e:
            errors.append(e)
        raise_config_errors(errors)
