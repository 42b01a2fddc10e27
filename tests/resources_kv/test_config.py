"""Options of the kv resource: defaults, the deprecated synonym and every error naming its key."""

from __future__ import annotations

import logging

import pytest

from vxsandbox_core import ConfigError
from vxsandbox_resources_kv import KVConfig, RedisResource


def test_defaults() -> None:
    """Defaults: Redis on localhost db 0, 100 keys hard, 80 soft, 1 KiB keys, 256 KiB values."""
    config = KVConfig({"cls": "kv"})
    assert (config.backend, config.keys_per_user_hard, config.keys_per_user_soft) == ("redis", 100, 80)
    assert (config.max_key_length, config.max_value_size) == (1024, 256 * 1024)
    assert (config.redis.host, config.redis.port, config.redis.db, config.redis.key_prefix) == \
        ("127.0.0.1", 6379, 0, "")


def test_soft_limit_defaults_to_eighty_percent_of_hard() -> None:
    """keys_per_user_soft follows keys_per_user_hard when not given."""
    assert KVConfig({"keys_per_user_hard": 10}).keys_per_user_soft == 8


def test_redis_url_parts() -> None:
    """Host, port, database and password come from the URL."""
    redis = KVConfig({"redis_manager": {"url": "redis://:s%40cret@redis.example:6380/3"}}).redis
    assert (redis.host, redis.port, redis.db, redis.password) == ("redis.example", 6380, 3, "s@cret")


def test_deprecated_keys_per_user_sets_hard_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """keys_per_user is read as keys_per_user_hard, with a deprecation warning naming the new key."""
    with caplog.at_level(logging.WARNING, "vxsandbox.config"):
        config = KVConfig({"keys_per_user": 50}, prefix="sandbox.kv.")
    assert (config.keys_per_user_hard, config.keys_per_user_soft) == (50, 40)
    assert "'sandbox.kv.keys_per_user' is deprecated: use 'sandbox.kv.keys_per_user_hard'" in caplog.text


@pytest.mark.parametrize(("raw", "key", "text"), [
    ({"backend": "mongo"}, "sandbox.kv.backend", "expected 'redis' or 'memory'"),
    ({"keys_per_user_hard": 0}, "sandbox.kv.keys_per_user_hard", "positive"),
    ({"keys_per_user_hard": "100"}, "sandbox.kv.keys_per_user_hard", "expected an integer"),
    ({"keys_per_user_hard": 10, "keys_per_user_soft": 11}, "sandbox.kv.keys_per_user_soft", "must not exceed"),
    ({"keys_per_user_hard": 10, "keys_per_user": 20}, "sandbox.kv.keys_per_user", "disagrees"),
    ({"max_key_length": -1}, "sandbox.kv.max_key_length", "positive"),
    ({"max_value_size": 1.5}, "sandbox.kv.max_value_size", "expected an integer"),
    ({"redis_manager": "redis://x"}, "sandbox.kv.redis_manager", "expected a mapping"),
    ({"redis_manager": {"url": "http://x"}}, "sandbox.kv.redis_manager.url", "redis://"),
    ({"redis_manager": {"url": "redis://x:port/0"}}, "sandbox.kv.redis_manager.url", "port"),
    ({"redis_manager": {"url": "redis://x/zero"}}, "sandbox.kv.redis_manager.url", "database number"),
    ({"redis_manager": {"hots": "x"}}, "sandbox.kv.redis_manager.hots", "did you mean 'host'?"),
    ({"redis_manager": {"url": "redis://x/1", "db": 2}}, "sandbox.kv.redis_manager.db", "keep one of them"),
    ({"redis_manager": {"port": 0}}, "sandbox.kv.redis_manager.port", "TCP port"),
    ({"redis_manager": {"db": -1}}, "sandbox.kv.redis_manager.db", "database number"),
    ({"keys_per_usr": 5}, "sandbox.kv.keys_per_usr", "did you mean 'keys_per_user'?"),
    ({"redis_manger": {"db": 1}}, "sandbox.kv.redis_manger", "did you mean 'redis_manager'?"),
    ({"redis_manager": {"command_timeout": 0}}, "sandbox.kv.redis_manager.command_timeout", "positive"),
])
def test_bad_options_name_their_key(raw: dict[str, object], key: str, text: str) -> None:
    """Every bad option is a ConfigError naming the full key and what was expected."""
    with pytest.raises(ConfigError) as e:
        RedisResource("kv", None, {"cls": "kv", **raw})
    assert e.value.key == key
    assert text in str(e.value)


@pytest.mark.parametrize("manager, expected", [
    ({"host": "redis.example", "port": 6380, "db": 3, "password": "s@cret"},
     ("redis.example", 6380, 3, "s@cret", "", ":")),
    ({"db": 1}, ("127.0.0.1", 6379, 1, None, "", ":")),
    ({"key_prefix": "vumigo", "db": 1}, ("127.0.0.1", 6379, 1, None, "vumigo", ":")),
    ({"key_prefix": "jsbox", "key_separator": "#"}, ("127.0.0.1", 6379, 0, None, "jsbox", "#")),
])
def test_vumi_redis_manager_forms(manager: dict[str, object], expected: tuple[object, ...]) -> None:
    """Vumi's redis_manager keys (host, port, db, password, key_prefix, key_separator) give the same Redis."""
    redis = KVConfig({"redis_manager": manager}).redis
    assert (redis.host, redis.port, redis.db, redis.password, redis.key_prefix, redis.key_separator) == expected


def test_key_separator_joins_prefix_and_key() -> None:
    """key_separator stands between key_prefix and the rest of every key, as in Vumi."""
    resource = RedisResource("kv", None, {"cls": "kv", "backend": "memory",
                                          "redis_manager": {"key_prefix": "go", "key_separator": "#"}})
    assert resource.backend.scheme.data_key("t", "k") == "go#sandboxes#t#k"


def test_fake_redis_becomes_the_memory_backend(caplog: pytest.LogCaptureFixture) -> None:
    """Vumi's FAKE_REDIS is deprecated: the resource keeps values in memory and says to use backend: memory."""
    with caplog.at_level(logging.WARNING, "vxsandbox.config"):
        config = KVConfig({"redis_manager": {"FAKE_REDIS": "yes"}}, prefix="sandbox.kv.")
    assert config.backend == "memory"
    assert "'sandbox.kv.redis_manager.FAKE_REDIS' is deprecated: use 'backend: memory'" in caplog.text
    assert config.warnings == [caplog.records[0].getMessage()]


def test_misspelled_redis_manager_is_refused_not_db_zero() -> None:
    """A misspelled redis_manager is an error, not a silent fall back to Redis db 0."""
    with pytest.raises(ConfigError) as e:
        RedisResource("kv", None, {"cls": "kv", "redis_manger": {"db": 3}})
    assert "config key 'sandbox.kv.redis_manger': is not a config key here; did you mean 'redis_manager'?" \
        == str(e.value)
