"""Worker configuration: declared fields with types, defaults and validation.

A config class lists its fields; building it from a dict checks each value
and raises :class:`ConfigError` naming the key, the value and what was
expected (every error found, not just the first). One rule holds at every
level: a key the class does not declare is an error that names it and the
closest declared key, unless it is a key of an old Vumi config the class
lists in ``deprecated_keys`` (a warning saying what replaced it, or why it
is ignored) or ``refused_keys`` (an error saying why). The field lists double
as the configuration reference.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ConfigError, raise_config_errors
from .isolation import check_isolation
from .rlimits import MiB, parse_rlimits

log = logging.getLogger("vxsandbox.config")

_MISSING = object()


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping", list: "a list", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


@dataclass(frozen=True)
class Field:
    """One config key: its accepted types, default, description and extra check.

    ``check`` receives the value (already type-checked) and returns the value
    to store, or raises ``ValueError`` whose text says what was expected.
    """

    name: str
    types: tuple[type, ...]
    description: str
    default: Any = _MISSING
    check: Callable[[Any], Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def parse(self, raw: dict[str, Any], prefix: str) -> Any:
        key = prefix + self.name
        if self.name not in raw:
            if self.required:
                raise ConfigError(key, f"is required ({self.description})")
            default = self.default
            return default() if callable(default) else default
        value = raw[self.name]
        # bool is an int subclass; a boolean is never a number here.
        ok = isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types)
        if not ok and float in self.types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(key, f"expected {_type_name(self.types)}, got {value!r}")
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as e:
                raise ConfigError(key, f"{e} (got {value!r})") from None
        return value


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError("expected a positive number")
    return value


def non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("expected zero or a positive number")
    return value


def string_list(value: list[Any]) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return value


def string_map(value: dict[Any, Any]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("expected a mapping of strings to strings")
    return value


class Config:
    """Base of config classes: validated attributes from a dict of raw values.

    ``warnings`` lists the deprecation warnings building it gave (each is
    also logged).
    """

    fields: ClassVar[tuple[Field, ...]] = ()
    #: keys of old Vumi configs still accepted: key -> what replaced it, or why it is ignored
    deprecated_keys: ClassVar[dict[str, str]] = {}
    #: keys of old Vumi configs refused: key -> why, and what to do instead
    refused_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "") -> None:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {raw!r}")
        self.raw = raw
        self.prefix = prefix
        self.warnings: list[str] = []
        errors: list[ConfigError] = []
        for f in self.all_fields():
            try:
                setattr(self, f.name, f.parse(raw, prefix))
            except ConfigError as e:
                errors.append(e)
        errors.extend(self._key_errors())
        if not errors:
            try:
                self.validate()
            except ConfigError as e:
                errors.append(e)
        raise_config_errors(errors)

    def validate(self) -> None:
        """Check what spans several fields, once every field is valid; raise :class:`ConfigError`.

        Subclasses extend this (calling ``super().validate()``) rather than
        checking after ``__init__``, so every error is reported in one pass.
        """

    def warn(self, message: str) -> None:
        """Record and log a deprecation warning about this config."""
        self.warnings.append(message)
        log.warning("%s", message)

    def _key_errors(self) -> list[ConfigError]:
        known = [f.name for f in self.all_fields()]
        deprecated = self.all_deprecated_keys()
        refused = self.all_refused_keys()
        errors: list[ConfigError] = []
        for key in self.raw:
            if key in known:
                continue
            if not isinstance(key, str):
                errors.append(ConfigError(self.prefix + str(key), "config keys must be strings"))
            elif key in deprecated:
                self.warn(f"config key {self.prefix + key!r} is deprecated: {deprecated[key]}")
            elif key in refused:
                errors.append(ConfigError(self.prefix + key, refused[key]))
            else:
                errors.append(ConfigError(self.prefix + key, unknown_key_message(key, known)))
        return errors

    @classmethod
    def all_fields(cls) -> list[Field]:
        """Every field of this class and its bases, a subclass's field replacing its base's."""
        seen: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            for f in getattr(klass, "fields", ()):
                seen[f.name] = f
        return list(seen.values())

    @classmethod
    def all_deprecated_keys(cls) -> dict[str, str]:
        """``deprecated_keys`` of this class and its bases, minus keys that are fields here."""
        return cls._merged("deprecated_keys")

    @classmethod
    def all_refused_keys(cls) -> dict[str, str]:
        """``refused_keys`` of this class and its bases, minus keys that are fields here."""
        return cls._merged("refused_keys")

    @classmethod
    def _merged(cls, attr: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get(attr, {}))
        fields = {f.name for f in cls.all_fields()}
        return {k: v for k, v in merged.items() if k not in fields}

    def get(self, key: str, default: Any = None) -> Any:
        """Read a key, declared or not, from the raw config."""
        if any(f.name == key for f in self.all_fields()):
            return getattr(self, key)
        return self.raw.get(key, default)


def unknown_key_message(key: str, known: list[str]) -> str:
    """Say that ``key`` is not a config key, naming the closest of ``known`` (or all of a short list)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"is not a config key here; did you mean {close[0]!r}?"
    if len(known) <= 10:
        return f"is not a config key here (keys: {', '.join(sorted(known)) or 'none'})"
    return "is not a config key here (see the configuration reference)"


class ResourceConfig(Config):
    """Base of resource config classes: the ``sandbox.<name>`` mapping, whose ``cls`` names the resource."""

    fields: ClassVar[tuple[Field, ...]] = (
        Field("cls", (str, type(None)), "the resource class: entry point name, class path or old Vumi name",
              None),
    )


def _port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("expected a TCP port number from 0 to 65535")
    return value


def _host(value: str) -> str:
    if not value.strip():
        raise ValueError("expected an address to listen on, such as 127.0.0.1 or 0.0.0.0")
    return value


def _sandbox_map(value: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    for name, conf in value.items():
        if not isinstance(name, str) or not isinstance(conf, dict):
            raise ValueError(f"resource {name!r} must map a name to a mapping with a 'cls' key")
        if not isinstance(conf.get("cls"), str):
            raise ValueError(f"resource {name!r} has no 'cls' string naming its class")
    return value


class SandboxConfig(Config):
    """Config of the generic sandbox worker (the seed's SandboxConfig options)."""

    worker: str
    transport_name: str | None
    sandbox_id: str | None
    sandbox: dict[str, dict[str, Any]]
    executable: str | None
    args: list[str]
    path: str | None
    env: dict[str, str]
    timeout: float
    recv_limit: int
    stdin_limit: int
    rlimits: dict[int, tuple[int, int]]
    max_log_lines_per_run: int
    logging_resource: str | None
    messages_per_process: int
    runs_per_child: int
    prefork: int
    max_children: int | None
    idle_timeout: float
    shutdown_timeout: float
    ordered: bool
    isolation: str
    max_requests_per_run: int
    max_pending_requests: int
    send_to: dict[str, Any]
    amqp: dict[str, Any]
    amqp_prefetch_count: int
    metrics_port: int | None
    metrics_host: str
    metrics_max_series: int
    metrics_max_series_per_tenant: int

    fields: ClassVar[tuple[Field, ...]] = (
        Field("worker", (str,), "entry point name or class path of the worker to run", "sandbox"),
        Field("transport_name", (str, type(None)), "name of the transport whose queues the worker consumes", None),
        Field("sandbox_id", (str, type(None)),
              "sandbox id used when a message carries none (vumi2 messages never do)", None),
        Field("sandbox", (dict,), "resources offered to the sandbox: name -> {cls: ..., options}",
              dict, _sandbox_map),
        Field("executable", (str, type(None)), "program to run as the sandbox", None),
        Field("args", (list,), "arguments to pass to the executable", list, string_list),
        Field("path", (str, type(None)), "working directory of the sandboxed process", None),
        Field("env", (dict,), "environment of the sandboxed process (nothing is inherited)",
              dict, string_map),
        Field("timeout", (int, float), "seconds a sandbox run may take before it is killed", 60, positive),
        Field("recv_limit", (int,), "bytes of stdout plus stderr a run may write before it is killed",
              1 * MiB, positive),
        Field("stdin_limit", (int,), "bytes of replies that may wait, unread, on a child's stdin; a child "
              "that stops reading while it keeps asking is killed past it (the worker's own commands, such "
              "as a large inbound message, do not count)", 8 * MiB, positive),
        Field("rlimits", (dict,), "resource limits (RLIMIT_* name or number -> value or [soft, hard]) "
              "merged over the restrictive defaults", dict, parse_rlimits),
        Field("max_log_lines_per_run", (int,), "log lines one run may write (stderr lines and log resource "
              "requests together); later ones are dropped and counted in one line at the run's end",
              1000, positive),
        Field("logging_resource", (str, type(None)), "name of the resource that receives the sandbox's log lines",
              None),
        Field("messages_per_process", (int,), "messages of one sandbox_id (and one version of its code) a "
              "child may serve before it is retired; above 1 children are kept warm between messages",
              1, positive),
        Field("runs_per_child", (int,), "messages of one sandbox_id (and one version of its code) a warm "
              "child may serve at the same time, each in its own run; above 1 the child's program must "
              "keep runs apart by their run_id (the JavaScript runner does)", 1, positive),
        Field("prefork", (int,), "blank children kept started ahead of need, so a message does not wait "
              "for a process to start", 0, non_negative),
        Field("max_children", (int, type(None)), "live children at most (busy, warm and pre-started); "
              "null means twice amqp_prefetch_count plus prefork", None, positive),
        Field("idle_timeout", (int, float), "seconds a warm child may wait for its next message", 60, positive),
        Field("shutdown_timeout", (int, float), "seconds a stopping worker waits for runs in flight; runs "
              "still going then are killed and their messages go back to the queue", 7, positive),
        Field("ordered", (bool,), "run the messages of one sandbox_id one at a time, in arrival order", False),
        Field("isolation", (str,), "how children are confined: 'auto' ('bwrap' wherever bubblewrap is "
              "usable, else 'none' with a WARNING), 'bwrap' (bubblewrap jail: no network, own PID namespace, "
              "read-only view of what the child needs, private /tmp, an unprivileged uid) or 'none' (rlimits "
              "only: the child can reach the network; a root worker still gives it its own uid)",
              "auto", check_isolation),
        Field("max_requests_per_run", (int,), "requests one run may make before its child is killed",
              10000, positive),
        Field("max_pending_requests", (int,), "requests one run may have waiting for replies at once; "
              "more get an error reply", 100, positive),
        Field("send_to", (dict,), "outbound endpoints: name -> {transport_name: ...}", dict),
        Field("amqp", (dict,), "broker connection: {url: amqp://...}", dict),
        Field("amqp_prefetch_count", (int,), "unacknowledged deliveries the broker may hand the worker at once",
              20, positive),
        Field("metrics_port", (int, type(None)), "TCP port serving Prometheus metrics at /metrics and the "
              "broker connection's health at /health (0 picks a free port); null serves nothing",
              None, _port),
        Field("metrics_host", (str,), "address metrics_port listens on: 0.0.0.0 (every IPv4 interface, so a "
              "Prometheus server elsewhere can scrape it), 127.0.0.1 to keep it on this machine, or :: for IPv6",
              "0.0.0.0", _host),
        Field("metrics_max_series", (int,), "app metric series (sandbox_id, store, metric, aggregator) "
              "exported at /metrics in all; fires of further ones are counted in one '_overflow' series "
              "per aggregator", 10000, positive),
        Field("metrics_max_series_per_tenant", (int,), "app metric series one sandbox_id may have "
              "exported at /metrics; its further ones fold into the '_overflow' series", 100, positive),
    )

    deprecated_keys: ClassVar[dict[str, str]] = {
        "worker_name": "ignored: it named Vumi's heartbeat publisher and log system, which vxsandbox does "
                       "not have (log lines name the worker's transport_name)",
        "metrics_prefix": "ignored: Vumi's metric bus is gone; set metrics_port to serve Prometheus metrics",
        "redis_manager": "ignored at the top level: it was Vumi Go's own store; the kv resource takes "
                         "its Redis connection under sandbox.<name>.redis_manager",
        "riak_manager": "ignored: it was Vumi Go's message store (Riak), which a sandbox worker never uses",
    }
    refused_keys: ClassVar[dict[str, str]] = {
        **{key: f"only the JavaScript workers read {key!r}, and this config runs the generic 'sandbox' "
                f"worker (old configs named their worker on the twistd command line): set 'worker: {workers}' "
                "in the file, or pass --worker-class"
           for key, workers in (("javascript", "js"), ("javascript_file", "js-file' or 'js-standalone"),
                                ("app_context", "js', 'js-file' or 'js-standalone"))},
        "middleware": "Vumi middleware does not run here, and dropping it silently could lose what it "
                      "did (storing messages, say): remove the key, or write a plugin on the hooks "
                      "(message_processed, reply_sent, ...)",
    }

    def validate(self) -> None:
        """Check that ``logging_resource`` names a configured resource."""
        super().validate()
        if self.logging_resource is not None and self.logging_resource not in self.sandbox:
            raise ConfigError(self.prefix + "logging_resource",
                              f"names {self.logging_resource!r}, which is not a resource in 'sandbox' "
                              f"(resources: {sorted(self.sandbox) or 'none'})")
