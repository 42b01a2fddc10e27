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
