"""Tests for the built-in ``metrics`` resource (vxsandbox_core.builtins.metrics)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from vxsandbox_core.builtins import MetricsResource
from vxsandbox_core.hookspecs import hookimpl
from vxsandbox_core.registry import resolve_resource
from vxsandbox_core.testing import FakeSandboxApi, hooks_with


class MetricRecorder:
    """A plugin that records every ``metric_fired`` call."""

    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []

    @hookimpl
    def metric_fired(self, sandbox_id: str, store: str, metric: str, value: float, agg: str) -> None:
        self.fired.append({"sandbox_id": sandbox_id, "store": store, "metric": metric, "value": value, "agg": agg})


class MetricsResourceTests(TestCase):

    def setUp(self) -> None:
        self.resource = MetricsResource("metrics", None, {"cls": "metrics"})
        self.recorder = MetricRecorder()

    async def fire(self, sandbox_id: str = "tenant", **fields: Any) -> dict[str, Any]:
        """Send ``metrics.fire`` through a fake run and return the reply."""
        api = FakeSandboxApi(sandbox_id=sandbox_id)
        api.hooks = hooks_with(self.recorder)
        api.resources.add("metrics", self.resource)
        await api.dispatch_request({"cmd": "metrics.fire", "cmd_id": "7", "reply": False, **fields})
        (reply,) = api.sent
        return reply

    async def test_fire_is_announced_to_plugins(self) -> None:
        """A valid fire succeeds and reaches the ``metric_fired`` hook with the tenant's id."""
        reply = await self.fire(store="tea", metric="orders.count", value=2, agg="sum")
        assert reply["success"] is True
        assert self.recorder.fired == [
            {"sandbox_id": "tenant", "store": "tea", "metric": "orders.count", "value": 2.0, "agg": "sum"}]

    async def test_store_defaults_to_default(self) -> None:
        """Without ``store`` the metric goes to the store named ``default``, as in Vumi."""
        await self.fire(metric="m", value=1, agg="last")
        assert self.recorder.fired[0]["store"] == "default"

    async def test_values_aggregate_per_aggregator(self) -> None:
        """sum, avg, min, max and last each fold fired values their own way, per tenant."""
        for agg in ("sum", "avg", "min", "max", "last"):
            for value in (4, 1, 7):
                await self.fire(metric="m", value=value, agg=agg)
        await self.fire(sandbox_id="other", metric="m", value=100, agg="sum")
        got = {(a.sandbox_id, a.agg): (a.value, a.count) for a in self.resource.aggregates()}
        assert got == {
            ("tenant", "sum"): (12.0, 3), ("tenant", "avg"): (4.0, 3), ("tenant", "min"): (1.0, 3),
            ("tenant", "max"): (7.0, 3), ("tenant", "last"): (7.0, 3), ("other", "sum"): (100.0, 1)}

    async def test_flush_hands_over_and_resets(self) -> None:
        """flush returns the aggregates once and starts afresh."""
        await self.fire(metric="m", value=3, agg="sum")
        assert [a.value for a in self.resource.flush()] == [3.0]
        assert self.resource.aggregates() == []

    async def test_invalid_fires_are_error_replies(self) -> None:
        """Bad names, values and aggregators fail with a reason and are neither aggregated nor announced."""
        cases = [
            ({"metric": "1bad", "value": 1, "agg": "sum"}, "metric name"),
            ({"metric": "m" * 102, "value": 1, "agg": "sum"}, "metric name"),
            ({"metric": "m", "store": "bad store", "value": 1, "agg": "sum"}, "store name"),
            ({"value": 1, "agg": "sum"}, "missing metric"),
            ({"metric": "m", "value": "x", "agg": "sum"}, "metric value"),
            ({"metric": "m", "value": True, "agg": "sum"}, "metric value"),
            ({"metric": "m", "value": float("nan"), "agg": "sum"}, "finite"),
            ({"metric": "m", "value": 1, "agg": "median"}, "aggregator"),
        ]
        for fields, reason in cases:
            reply = await self.fire(**fields)
            assert reply["success"] is False, fields
            assert reason in reply["reason"], (fields, reply["reason"])
        assert self.recorder.fired == []
        assert self.resource.aggregates() == []

    async def test_longest_valid_name_is_accepted(self) -> None:
        """A name of a letter plus 100 more characters is still valid, as in Vumi."""
        reply = await self.fire(metric="m" + "x" * 100, value=1, agg="max")
        assert reply["success"] is True

    def test_entry_point_and_legacy_name_resolve(self) -> None:
        """``metrics`` and the old Vumi name resolve to this resource."""
        assert resolve_resource("metrics") is MetricsResource
        assert resolve_resource("vumi.application.sandbox.MetricsResource") is MetricsResource


class MetricCapTests(TestCase):
    """Ever-new metric names cannot grow the resource's aggregates without bound."""

    async def fire(self, resource: MetricsResource, sandbox_id: str, metric: str) -> dict[str, Any]:
        api = FakeSandboxApi(sandbox_id=sandbox_id)
        api.resources.add("metrics", resource)
        await api.dispatch_request({"cmd": "metrics.fire", "cmd_id": "1", "reply": False,
                                    "metric": metric, "value": 1, "agg": "sum"})
        (reply,) = api.sent
        return reply

    async def test_new_names_past_the_tenant_cap_are_refused_with_a_reason(self) -> None:
        """Past max_metrics_per_tenant new names fail with the key named; known names and other tenants go on."""
        resource = MetricsResource("metrics", None, {"cls": "metrics", "max_metrics_per_tenant": 20})
        replies = [await self.fire(resource, "flood", f"m{i}") for i in range(1000)]
        assert [r["success"] for r in replies] == [True] * 20 + [False] * 980
        assert "max_metrics_per_tenant (20)" in replies[20]["reason"]
        assert len(resource.aggregates()) == 20
        assert (await self.fire(resource, "flood", "m3"))["success"] is True
        assert (await self.fire(resource, "other", "m999"))["success"] is True
        resource.flush()
        assert (await self.fire(resource, "flood", "m999"))["success"] is True

    async def test_total_cap_bounds_many_tenants(self) -> None:
        """Ever-new tenants are bounded too: past max_metrics in all, new metrics fail naming that key."""
        resource = MetricsResource("metrics", None, {"cls": "metrics", "max_metrics": 50})
        replies = [await self.fire(resource, f"t{i}", "m") for i in range(80)]
        assert sum(r["success"] for r in replies) == 50
        assert "max_metrics (50)" in replies[-1]["reason"]
        assert len(resource.aggregates()) == 50

    def test_defaults_and_bad_values(self) -> None:
        """The caps default to 100 per tenant and 10000 in all; a non-positive cap names its key."""
        resource = MetricsResource("metrics", None, {"cls": "metrics"})
        assert (resource.options.max_metrics_per_tenant, resource.options.max_metrics) == (100, 10000)
        from vxsandbox_core.errors import ConfigError
        with self.assertRaises(ConfigError) as e:
            MetricsResource("metrics", None, {"cls": "metrics", "max_metrics_per_tenant": 0})
        assert "sandbox.metrics.max_metrics_per_tenant" in str(e.exception)
