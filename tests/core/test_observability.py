"""Tests for the Prometheus metrics and health plugin (vxsandbox_core.observability)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.memory import MemoryBroker
from vxsandbox_core.config import SandboxConfig
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.observability import ObservabilityPlugin, broker_connected, start_observability
from vxsandbox_core.process import SandboxResult
from vxsandbox_core.testing import (
    FakeSandboxApi,
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)
from vxsandbox_core.worker import Sandbox


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the local observability server like a scraper would; returns (status, body)."""
    return await deferToThread(_get, f"http://127.0.0.1:{port}{path}")


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse a Prometheus exposition into {(sample name, sorted labels): value}."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


class ServedMetricsTests(TestCase):
    """A worker with ``metrics_port`` runs real children and its counters are scraped over HTTP."""

    async def make_worker(self, requests: list[dict[str, Any]], **extra: Any) -> tuple[Sandbox, int]:
        broker = MemoryBroker()
        await broker.connect()
        config = python_worker_config(python_child(requests), sandbox={"metrics": {"cls": "metrics"}},
                                      metrics_port=0, **extra)
        worker = Sandbox(config, broker=broker, hooks=hooks_with())
        await worker.setup()
        server = start_observability(worker)
        assert server is not None
        self.addCleanup(server.stop)
        return worker, server.port

    async def test_counters_move_after_messages(self) -> None:
        """Three messages that fire an app metric show up as processed messages, spawns, runs and commands."""
        worker, port = await self.make_worker([
            {"cmd": "metrics.fire", "metric": "hits", "value": 2, "agg": "sum"},
            {"cmd": "metrics.fire", "metric": "hits", "value": "nope", "agg": "sum"},
        ])
        _, before = await http_get(port, "/metrics")
        assert samples(before).get(("vxsandbox_messages_processed_total",
                                    (("message_type", "user_message"), ("outcome", "ok")))) is None
        for _ in range(3):
            assert await worker.process_message(make_user_message()) == "ok"
        code, text = await http_get(port, "/metrics")
        found = samples(text)
        assert code == 200
        assert found[("vxsandbox_messages_processed_total",
                      (("message_type", "user_message"), ("outcome", "ok")))] == 3
        assert found[("vxsandbox_sandbox_spawns_total", ())] == 3
        assert found[("vxsandbox_sandbox_runs_total", (("result", "ok"),))] == 3
        assert found[("vxsandbox_sandbox_run_duration_seconds_count", ())] == 3
        assert found[("vxsandbox_message_duration_seconds_count", ())] == 3
        assert found[("vxsandbox_resource_commands_total",
                      (("command", "fire"), ("outcome", "ok"), ("resource", "metrics")))] == 3
        assert found[("vxsandbox_resource_commands_total",
                      (("command", "fire"), ("outcome", "error"), ("resource", "metrics")))] == 3
        labels = (("agg", "sum"), ("metric", "hits"), ("sandbox_id", "test-sandbox"), ("store", "default"))
        assert found[("vxsandbox_app_metric", labels)] == 6
        assert found[("vxsandbox_app_metric_fires_total", labels)] == 3
        assert found[("vxsandbox_broker_connected", ())] == 1

    async def test_kills_are_counted_by_reason(self) -> None:
        """A child asking for a command no resource has is killed, and the kill is counted by its reason."""
        worker, port = await self.make_worker([{"cmd": "metrics.explode"}])
        assert await worker.process_message(make_user_message()) == "error"
        found = samples((await http_get(port, "/metrics"))[1])
        assert found[("vxsandbox_sandbox_kills_total", (("reason", "unknown command"),))] == 1
        assert found[("vxsandbox_sandbox_runs_total", (("result", "killed"),))] == 1
        assert found[("vxsandbox_messages_processed_total",
                      (("message_type", "user_message"), ("outcome", "error")))] == 1

    async def test_refused_message_is_counted(self) -> None:
        """A message no sandbox can be picked for counts as refused without any spawn."""
        worker, port = await self.make_worker([], sandbox_id=None)
        assert await worker.process_message(make_user_message()) == "refused"
        found = samples((await http_get(port, "/metrics"))[1])
        assert found[("vxsandbox_messages_processed_total",
                      (("message_type", "user_message"), ("outcome", "refused")))] == 1
        assert found[("vxsandbox_sandbox_spawns_total", ())] == 0

    async def test_health_follows_the_broker(self) -> None:
        """/health answers 200 while the broker is connected and 503 once it is not."""
        worker, port = await self.make_worker([])
        code, body = await http_get(port, "/health")
        assert (code, json.loads(body)) == (200, {"status": "ok", "broker": "connected"})
        await worker.broker.close()
        code, body = await http_get(port, "/health")
        assert (code, json.loads(body)) == (503, {"status": "unhealthy", "broker": "disconnected"})
        found = samples((await http_get(port, "/metrics"))[1])
        assert found[("vxsandbox_broker_connected", ())] == 0

    async def test_unknown_path_is_not_found(self) -> None:
        """Only /metrics and /health are served."""
        _, port = await self.make_worker([])
        code, _ = await http_get(port, "/secrets")
        assert code == 404

    async def test_stop_unregisters_and_closes_the_port(self) -> None:
        """After stop the plugin no longer counts and the port is closed."""
        broker = MemoryBroker()
        worker = Sandbox(python_worker_config(python_child([]), metrics_port=0), broker=broker,
                         hooks=hooks_with())
        server = start_observability(worker)
        assert server is not None
        assert server.plugin in worker.hooks.pm.get_plugins()
        await server.stop()
        assert server.plugin not in worker.hooks.pm.get_plugins()
        assert server.listening is None


    async def test_binds_metrics_host(self) -> None:
        """The server listens on metrics_host, and on every interface when it is not set."""
        for config, host in (({"metrics_host": "127.0.0.1"}, "127.0.0.1"), ({}, "0.0.0.0")):
            worker = Sandbox(python_worker_config(python_child([]), metrics_port=0, **config),
                             broker=MemoryBroker(), hooks=hooks_with())
            server = start_observability(worker)
            assert server is not None and server.listening is not None
            try:
                assert server.listening.getHost().host == host
            finally:
                await server.stop()


class ConfigTests(TestCase):
    """``metrics_port`` turns the plugin on and is validated like every key."""

    def test_no_metrics_port_serves_nothing(self) -> None:
        """Without ``metrics_port`` nothing is registered or served."""
        worker = Sandbox(python_worker_config(python_child([])), broker=RecordingBroker(), hooks=hooks_with())
        assert start_observability(worker) is None
        assert worker.hooks.pm.get_plugins() == set()

    def test_bad_port_is_a_config_error(self) -> None:
        """A port outside 0..65535 is rejected naming the key."""
        with self.assertRaises(ConfigError) as caught:
            SandboxConfig({"metrics_port": 70000})
        assert "metrics_port" in str(caught.exception)
        with self.assertRaises(ConfigError):
            SandboxConfig({"metrics_port": "9100"})


class PluginTests(TestCase):
    """The plugin's hook implementations, called directly."""

    def test_app_metric_aggregators(self) -> None:
        """Each aggregator folds fired values as its name says."""
        plugin = ObservabilityPlugin()
        for agg, values, expected in [("sum", [1, 2, 3], 6), ("avg", [1, 2, 6], 3), ("min", [5, 2, 9], 2),
                                      ("max", [5, 2, 9], 9), ("last", [5, 2, 9], 9)]:
            for v in values:
                plugin.metric_fired(sandbox_id="t", store="s", metric="m", value=float(v), agg=agg)
            value = plugin.registry.get_sample_value("vxsandbox_app_metric",
                                                     {"sandbox_id": "t", "store": "s", "metric": "m", "agg": agg})
            assert value == expected, agg

    def test_unknown_commands_share_one_label(self) -> None:
        """Command names a resource does not implement are counted under ``other``, not verbatim."""
        plugin = ObservabilityPlugin()
        api = FakeSandboxApi()
        from vxsandbox_core.builtins import MetricsResource
        api.resources.add("metrics", MetricsResource("metrics", None, {"cls": "metrics"}))
        plugin.reply_sent(api=api, command={"cmd": "metrics.x1"}, reply={"success": False})
        plugin.reply_sent(api=api, command={"cmd": "bogus.x2"}, reply={"success": False})
        plugin.reply_sent(api=api, command={"cmd": "metrics.fire"}, reply={"success": True})
        get = plugin.registry.get_sample_value
        assert get("vxsandbox_resource_commands_total",
                   {"resource": "metrics", "command": "other", "outcome": "error"}) == 1
        assert get("vxsandbox_resource_commands_total",
                   {"resource": "other", "command": "other", "outcome": "error"}) == 1
        assert get("vxsandbox_resource_commands_total",
                   {"resource": "metrics", "command": "fire", "outcome": "ok"}) == 1

    def test_failed_run_without_kill(self) -> None:
        """A run that exits non-zero on its own is counted as failed, not as a kill."""
        plugin = ObservabilityPlugin()
        plugin.sandbox_ended(api=FakeSandboxApi(), result=SandboxResult(3, None, None, False, 0.2))
        assert plugin.registry.get_sample_value("vxsandbox_sandbox_runs_total", {"result": "failed"}) == 1
        assert plugin.registry.get_sample_value("vxsandbox_sandbox_kills_total", {"reason": "timeout"}) is None

    def test_broker_state(self) -> None:
        """No broker is healthy (nothing to lose); a memory broker is connected only after connect()."""
        assert broker_connected(None) is None
        assert ObservabilityPlugin().health() == (True, {"status": "ok", "broker": "none"})
        broker = MemoryBroker()
        assert broker_connected(broker) is False
        broker.connected = True
        assert broker_connected(broker) is True


class CardinalityTests(TestCase):
    """Tenant-supplied metric names never become an unbounded set of Prometheus series."""

    def series(self, plugin: ObservabilityPlugin, name: str) -> list[dict[str, str]]:
        return [s.labels for m in plugin.registry.collect() for s in m.samples if s.name == name]

    def test_names_past_the_caps_fold_into_one_overflow_series(self) -> None:
        """20 tenants firing 500 new names each give at most max_series series plus one overflow series."""
        plugin = ObservabilityPlugin(max_series=50, max_series_per_tenant=10)
        for tenant in range(20):
            for i in range(500):
                plugin.metric_fired(sandbox_id=f"t{tenant}", store="s", metric=f"m{i}", value=1.0, agg="sum")
        series = self.series(plugin, "vxsandbox_app_metric")
        assert len(series) == 51, len(series)
        assert sum(1 for s in series if s["sandbox_id"] == "t0") == 10
        overflow = {"sandbox_id": "_overflow", "store": "_overflow", "metric": "_overflow", "agg": "sum"}
        assert overflow in series
        get = plugin.registry.get_sample_value
        assert get("vxsandbox_app_metric_fires_total", overflow) == 20 * 500 - 50
        assert get("vxsandbox_app_metric_overflow_fires_total") == 20 * 500 - 50
        assert len(self.series(plugin, "vxsandbox_app_metric_fires_total")) == 51
        # A series already admitted keeps counting under its own name.
        plugin.metric_fired(sandbox_id="t0", store="s", metric="m0", value=5.0, agg="sum")
        assert get("vxsandbox_app_metric", {"sandbox_id": "t0", "store": "s", "metric": "m0", "agg": "sum"}) == 6

    def test_caps_come_from_the_worker_config(self) -> None:
        """metrics_max_series and metrics_max_series_per_tenant are config keys with sensible defaults."""
        config = SandboxConfig({})
        assert (config.metrics_max_series, config.metrics_max_series_per_tenant) == (10000, 100)
        with self.assertRaises(ConfigError) as caught:
            SandboxConfig({"metrics_max_series": 0})
        assert "metrics_max_series" in str(caught.exception)
