"""Tests for config validation: defaults, and errors that name the key, the value and the expectation."""

from __future__ import annotations

import logging
import resource

import pytest

from vxsandbox_core.config import DEFAULT_RLIMITS, SandboxConfig, effective_rlimits, parse_rlimits
from vxsandbox_core.errors import ConfigError, ConfigErrors


def test_defaults_are_the_seeds():
    """An empty config gets the seed's defaults."""
    c = SandboxConfig({})
    assert (c.timeout, c.recv_limit, c.rlimits, c.logging_resource, c.args, c.env, c.sandbox,
            c.messages_per_process) == (60, 1024 * 1024, {}, None, [], {}, {}, 1)
    assert c.amqp_prefetch_count == 20


@pytest.mark.parametrize("raw, key, words", [
    ({"timeout": "soon"}, "timeout", "expected an integer or a number, got 'soon'"),
    ({"timeout": -1}, "timeout", "positive"),
    ({"timeout": True}, "timeout", "got True"),
    ({"recv_limit": 1.5}, "recv_limit", "expected an integer"),
    ({"args": ["a", 1]}, "args", "list of strings"),
    ({"env": {"A": 1}}, "env", "strings to strings"),
    ({"sandbox": {"kv": {}}}, "sandbox", "no 'cls' string"),
    ({"sandbox": {"kv": "redis"}}, "sandbox", "mapping with a 'cls'"),
    ({"logging_resource": "log"}, "logging_resource", "not a resource in 'sandbox'"),
    ({"rlimits": {"RLIMIT_AS": -5}}, "rlimits", "non-negative"),
    ({"rlimits": {"RLIMIT_AS": [10, 5]}}, "rlimits", "soft limit exceeds"),
    ({"rlimits": {"RLIMIT_AS": [1, 2, 3]}}, "rlimits", "[soft, hard]"),
    ({"rlimits": {999: 1}}, "rlimits", "unknown rlimit number 999"),
    ({"messages_per_process": 0}, "messages_per_process", "positive"),
])
def test_errors_name_key_and_expectation(raw, key, words):
    """Each bad value is refused with its key and a description of what was expected."""
    with pytest.raises(ConfigError) as e:
        SandboxConfig(raw)
    assert e.value.key == key
    assert words in str(e.value)


def test_rlimit_names_in_any_form():
    """Limits may be named RLIMIT_X, x, or by number, with one value or a pair."""
    limits = parse_rlimits({"RLIMIT_AS": 10, "nofile": [3, 4], resource.RLIMIT_CPU: "unlimited"})
    assert limits == {resource.RLIMIT_AS: (10, 10), resource.RLIMIT_NOFILE: (3, 4),
                      resource.RLIMIT_CPU: (resource.RLIM_INFINITY, resource.RLIM_INFINITY)}


def test_effective_rlimits_merge_over_defaults():
    """Configured limits replace the default for the same limit and keep the rest."""
    merged = effective_rlimits(parse_rlimits({"RLIMIT_AS": 1000}))
    assert merged[resource.RLIMIT_AS] == (1000, 1000)
    assert merged[resource.RLIMIT_NOFILE] == (15, 15)
    assert len(merged) == len(DEFAULT_RLIMITS)


def test_prefix_is_part_of_the_key():
    """A nested config reports the full dotted key."""
    with pytest.raises(ConfigError, match="'sandbox.kv.timeout'"):
        SandboxConfig({"timeout": "x"}, prefix="sandbox.kv.")


def test_deprecated_keys_stay_readable_through_get():
    """A deprecated old key is kept in raw and readable through get(), beside declared keys."""
    c = SandboxConfig({"worker_name": "x", "timeout": 5})
    assert c.get("worker_name") == "x" and c.get("timeout") == 5 and c.get("missing", 1) == 1


@pytest.mark.parametrize("key, closest", [
    ("timout", "timeout"),
    ("metrics_prot", "metrics_port"),
    ("sandbox_idd", "sandbox_id"),
    ("amqp_prefetch", "amqp_prefetch_count"),
])
def test_misspelled_top_level_key_names_the_closest(key: str, closest: str) -> None:
    """A misspelled top-level key is an error naming it and the closest known key."""
    with pytest.raises(ConfigError) as e:
        SandboxConfig({key: 1})
    assert str(e.value) == f"config key {key!r}: is not a config key here; did you mean {closest!r}?"


def test_unknown_key_with_no_close_match() -> None:
    """A key like no known one is still an error naming it."""
    with pytest.raises(ConfigError, match="'zzz': is not a config key here"):
        SandboxConfig({"zzz": 1})


def test_every_error_in_one_pass() -> None:
    """Wrong values and unknown keys are all reported together, each naming its key."""
    with pytest.raises(ConfigErrors) as e:
        SandboxConfig({"timout": 5, "recv_limit": "x", "metrics_prot": 9100, "prefork": -1})
    keys = [error.key for error in e.value.errors]
    assert sorted(keys) == ["metrics_prot", "prefork", "recv_limit", "timout"]
    assert len(str(e.value).splitlines()) == 4


@pytest.mark.parametrize("key, words", [
    ("worker_name", "ignored: it named Vumi's heartbeat"),
    ("metrics_prefix", "set metrics_port"),
    ("redis_manager", "sandbox.<name>.redis_manager"),
    ("riak_manager", "Riak"),
])
def test_old_vumi_keys_warn(key: str, words: str, caplog: pytest.LogCaptureFixture) -> None:
    """A key of an old Vumi worker config is accepted with a deprecation warning saying why."""
    with caplog.at_level(logging.WARNING, "vxsandbox.config"):
        config = SandboxConfig({key: "x"})
    assert config.warnings == [caplog.records[0].getMessage()]
    assert f"config key {key!r} is deprecated: " in caplog.text and words in caplog.text


@pytest.mark.parametrize("key, worker", [
    ("javascript", "'worker: js'"),
    ("javascript_file", "'worker: js-file' or 'js-standalone'"),
    ("app_context", "'worker: js', 'js-file' or 'js-standalone'"),
])
def test_js_keys_refused_by_the_generic_worker(key: str, worker: str) -> None:
    """A key only a JavaScript worker reads is refused by the generic worker, saying how to pick one."""
    with pytest.raises(ConfigError) as e:
        SandboxConfig({key: "x"})
    assert f"set {worker} in the file, or pass --worker-class" in str(e.value)


def test_vumi_middleware_refused() -> None:
    """Vumi middleware is refused, saying why and what to do instead."""
    with pytest.raises(ConfigError, match="'middleware': Vumi middleware does not run here"):
        SandboxConfig({"middleware": [{"logging_mw": "vumi.middleware.logging.LoggingMiddleware"}]})


def test_metrics_host() -> None:
    """metrics_host defaults to every interface and must be an address."""
    assert SandboxConfig({}).metrics_host == "0.0.0.0"
    assert SandboxConfig({"metrics_host": "127.0.0.1"}).metrics_host == "127.0.0.1"
    with pytest.raises(ConfigError, match="'metrics_host'"):
        SandboxConfig({"metrics_host": " "})
