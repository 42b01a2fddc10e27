"""Prometheus metrics and a broker health check for a running worker, served over HTTP.

:class:`ObservabilityPlugin` is an ordinary pluggy plugin: it counts what the
hooks report (messages processed by outcome, sandbox spawns, run durations,
kills by reason, resource commands by outcome, metrics fired by apps) into
its own ``prometheus_client`` registry. :class:`ObservabilityServer` serves
that registry with twisted.web on the worker config's ``metrics_port``:

- ``GET /metrics``: the Prometheus text exposition format;
- ``GET /health``: ``200`` with ``{"status": "ok", "broker": "connected"}``
  while the broker connection is up, ``503`` with ``"unhealthy"`` and
  ``"disconnected"`` while it is down (a load balancer or Kubernetes probe
  reads the status code).

:func:`start_observability` wires both to a worker when its config sets
``metrics_port``; nothing is served otherwise.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from twisted.web.server import Request

    from .dispatch import SandboxApi
    from .process import SandboxResult
    from .protocol import Command

log = logging.getLogger("vxsandbox.observability")

#: bucket bounds (seconds) of the run duration histogram: from a warm reply to the default 60 s timeout
RUN_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: label used for a command the resource does not implement
OTHER_COMMAND = "other"

#: the sandbox_id, store and metric labels of app metrics over the series caps
OVERFLOW = "_overflow"


def broker_connected(broker: Any) -> bool | None:
    """Whether ``broker`` is connected now: ``None`` when there is no broker to ask.

    Understands the AMQP broker (an open current connection) and anything
    with a boolean ``connected`` attribute (the in-memory broker).
    """
    if broker is None:
        return None
    if hasattr(broker, "connection") and hasattr(broker, "connections_made"):
        connection = broker.connection
        return bool(connection is not None and getattr(connection, "open", False))
    connected = getattr(broker, "connected", None)
    return bool(connected) if connected is not None else None


class ObservabilityPlugin:
    """Counts the life of sandboxes from the plugin hooks into a Prometheus registry.

    :param registry: where the metrics live (a new one by default, so two
        workers in one process, or two tests, never share counters).
    :param broker: the broker whose connection state ``vxsandbox_broker_connected`` reports.
    :param max_series: app metric series (sandbox_id, store, metric, aggregator) exported in all;
        fires of further ones are folded into one ``_overflow`` series per aggregator.
    :param max_series_per_tenant: app metric series one sandbox_id may have before its new ones fold too.
    """

    def __init__(self, registry: CollectorRegistry | None = None, broker: Any = None,
                 max_series: int = 10000, max_series_per_tenant: int = 100) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.broker = broker
        r = self.registry
        self.messages = Counter("vxsandbox_messages_processed", "Messages and events handled, by outcome",
                                ["message_type", "outcome"], registry=r)
        self.message_duration = Histogram("vxsandbox_message_duration_seconds",
                                          "Seconds from receipt of a message to the end of its handling",
                                          buckets=RUN_DURATION_BUCKETS, registry=r)
        self.spawns = Counter("vxsandbox_sandbox_spawns", "Sandboxed children spawned", registry=r)
        self.run_duration = Histogram("vxsandbox_sandbox_run_duration_seconds",
                                      "Seconds from spawning a sandboxed child to its exit",
                                      buckets=RUN_DURATION_BUCKETS, registry=r)
        self.runs = Counter("vxsandbox_sandbox_runs", "Sandbox runs ended, by how they ended",
                            ["result"], registry=r)
        self.kills = Counter("vxsandbox_sandbox_kills", "Sandboxed children killed by the worker, by reason",
                             ["reason"], registry=r)
        self.commands = Counter("vxsandbox_resource_commands", "Replies to sandbox requests, by outcome",
                                ["resource", "command", "outcome"], registry=r)
        self.app_fires = Counter("vxsandbox_app_metric_fires", "Metric values fired by apps",
                                 ["sandbox_id", "store", "metric", "agg"], registry=r)
        self.app_values = Gauge("vxsandbox_app_metric", "Metrics fired by apps, aggregated as each asks",
                                ["sandbox_id", "store", "metric", "agg"], registry=r)
        self.app_overflow = Counter("vxsandbox_app_metric_overflow_fires",
                                    "Metric values fired by apps past the series caps, folded into the "
                                    "_overflow series", registry=r)
        self.max_series = max_series
        self.max_series_per_tenant = max_series_per_tenant
        # Tenants choose metric names: without a cap each new one would be a new series forever.
        self._series_per_tenant: dict[str, int] = {}
        self._series = 0
        connected = Gauge("vxsandbox_broker_connected", "1 while the broker connection is up", registry=r)
        connected.set_function(lambda: 1.0 if broker_connected(self.broker) else 0.0)
        # Running (count, aggregate) per app metric, for aggregators a gauge cannot fold by itself.
        self._aggregates: dict[tuple[str, str, str, str], tuple[int, float]] = {}

    @hookimpl
    def message_processed(self, sandbox_id: str | None, message: Any, outcome: str, duration: float) -> None:
        """Count the message by type and outcome and record how long it took."""
        message_type = getattr(message, "message_type", None) or "unknown"
        self.messages.labels(message_type, outcome).inc()
        self.message_duration.observe(duration)

    @hookimpl
    def sandbox_started(self, api: SandboxApi, pid: int | None) -> None:
        """Count a spawn."""
        self.spawns.inc()

    @hookimpl
    def sandbox_ended(self, api: SandboxApi, result: SandboxResult) -> None:
        """Record the run's duration and how it ended, and count a kill by its reason."""
        self.run_duration.observe(result.duration)
        if result.kill_reason is not None:
            self.runs.labels("killed").inc()
            self.kills.labels(result.kill_reason).inc()
        elif result.ok:
            self.runs.labels("ok").inc()
        else:
            self.runs.labels("failed").inc()

    @hookimpl
    def reply_sent(self, api: SandboxApi, command: Command, reply: Command) -> None:
        """Count a reply by resource, command and outcome."""
        resource_name, _, command_name = str(command.get("cmd", "")).partition(".")
        # The child chooses command names; labelling unknown ones verbatim would let one tenant
        # grow the metric without bound.
        resource = api.resources.resources.get(resource_name) if hasattr(api, "resources") else None
        if resource is None:
            resource_name, command_name = OTHER_COMMAND, OTHER_COMMAND
        elif not callable(getattr(resource, "handle_" + command_name.replace("-", "_"), None)):
            command_name = OTHER_COMMAND
        outcome = "ok" if reply.get("success") else "error"
        self.commands.labels(resource_name, command_name, outcome).inc()

    @hookimpl
    def metric_fired(self, sandbox_id: str, store: str, metric: str, value: float, agg: str) -> None:
        """Fold an app's metric into its gauge the way its aggregator says (or into ``_overflow``)."""
        key = (sandbox_id, store, metric, agg)
        if key not in self._aggregates:
            if (self._series >= self.max_series
                    or self._series_per_tenant.get(sandbox_id, 0) >= self.max_series_per_tenant):
                key = (OVERFLOW, OVERFLOW, OVERFLOW, agg)
                self.app_overflow.inc()
            else:
                self._series += 1
                self._series_per_tenant[sandbox_id] = self._series_per_tenant.get(sandbox_id, 0) + 1
        self.app_fires.labels(*key).inc()
        count, current = self._aggregates.get(key, (0, 0.0))
        if count == 0:
            folded = value
        elif agg == "sum":
            folded = current + value
        elif agg == "avg":
            folded = current + (value - current) / (count + 1)
        elif agg == "min":
            folded = min(current, value)
        elif agg == "max":
            folded = max(current, value)
        else:
            folded = value
        self._aggregates[key] = (count + 1, folded)
        self.app_values.labels(*key).set(folded)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is healthy, and the JSON body ``/health`` answers with."""
        state = broker_connected(self.broker)
        broker = {True: "connected", False: "disconnected", None: "none"}[state]
        healthy = state is not False
        return healthy, {"status": "ok" if healthy else "unhealthy", "broker": broker}


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(self, plugin: ObservabilityPlugin) -> None:
        super().__init__()
        self.plugin = plugin

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.plugin.registry)


class _HealthPage(Resource):
    isLeaf = True

    def __init__(self, plugin: ObservabilityPlugin) -> None:
        super().__init__()
        self.plugin = plugin

    def render_GET(self, request: Request) -> bytes:
        healthy, body = self.plugin.health()
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(body).encode("utf-8") + b"\n"


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()  # type: ignore[no-any-return]


def metrics_site(plugin: ObservabilityPlugin) -> Site:
    """The twisted.web site serving ``/metrics`` and ``/health`` for ``plugin``."""
    root = _Root()
    # Resource declares IResource through zope.interface, which mypy does not see.
    root.putChild(b"metrics", cast(IResource, _MetricsPage(plugin)))
    root.putChild(b"health", cast(IResource, _HealthPage(plugin)))
    site = Site(root)
    # One access-log line per Prometheus scrape would drown the worker's own log.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


class ObservabilityServer:
    """A plugin registered on a worker's hooks plus the HTTP port serving it.

    :param plugin: the plugin whose registry and health are served.
    :param port: the TCP port (``0`` picks a free one; see :attr:`port` after :meth:`start`).
    :param interface: the address to listen on.
    """

    def __init__(self, plugin: ObservabilityPlugin, port: int, interface: str = "",
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.plugin = plugin
        self.requested_port = port
        self.interface = interface
        self.reactor = reactor
        self.listening: Any = None
        self.unregister: Any = None

    @property
    def port(self) -> int:
        """The port actually listened on."""
        if self.listening is None:
            raise RuntimeError("the observability server is not listening")
        return int(self.listening.getHost().port)

    def start(self) -> None:
        """Listen for scrapes and health checks."""
        self.listening = self.reactor.listenTCP(self.requested_port, metrics_site(self.plugin),
                                                interface=self.interface)
        log.info("serving Prometheus metrics on :%d/metrics and health on :%d/health", self.port, self.port)

    async def stop(self) -> None:
        """Stop listening and stop counting."""
        if self.unregister is not None:
            self.unregister()
            self.unregister = None
        if self.listening is not None:
            listening, self.listening = self.listening, None
            await listening.stopListening()


def start_observability(worker: Any, broker: Any = None, interface: str | None = None,
                        reactor: Any = None) -> ObservabilityServer | None:
    """Serve metrics and health for ``worker`` if its config sets ``metrics_port``; else return ``None``.

    The plugin is registered on the worker's own plugin manager, so it sees
    exactly the hooks that worker fires. Call :meth:`ObservabilityServer.stop`
    when the worker stops.

    :param broker: whose connection ``/health`` reports (default: ``worker.broker``).
    :param interface: the address to listen on (default: the config's ``metrics_host``).
    """
    port = worker.config.get("metrics_port")
    if port is None:
        return None
    if interface is None:
        interface = worker.config.get("metrics_host") or ""
    plugin = ObservabilityPlugin(broker=broker if broker is not None else getattr(worker, "broker", None),
                                 max_series=worker.config.get("metrics_max_series"),
                                 max_series_per_tenant=worker.config.get("metrics_max_series_per_tenant"))
    server = ObservabilityServer(plugin, port, interface, reactor)
    server.start()
    pm = worker.hooks.pm
    name = pm.register(plugin)
    server.unregister = lambda: pm.unregister(name=name)
    return server
