"""The ``metrics`` resource: apps fire named metric values, aggregated here and announced to plugins.

Every accepted ``fire`` is announced through the ``metric_fired`` hook, so a
metrics plugin (Prometheus, Graphite, Vumi's metric bus, ...) can export it,
and is folded into a running aggregate per tenant, store, metric and
aggregator that :meth:`MetricsResource.aggregates` returns and
:meth:`MetricsResource.flush` hands over and resets. Names follow Vumi's
rule: a letter, then up to 100 letters, digits, ``.``, ``_`` or ``-``.

An app inventing a new name at every fire would grow the aggregates without
bound, so a tenant may hold ``max_metrics_per_tenant`` aggregates and the
worker ``max_metrics`` in all between flushes; a fire that would start one
more fails with the reason and is not announced.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Field, ResourceConfig, positive
from ..dispatch import CommandError
from ..protocol import Command
from ..resources import SandboxResource

if TYPE_CHECKING:
    from ..dispatch import SandboxApi

#: the aggregators Vumi's metrics knew
AGGREGATORS = ("sum", "avg", "min", "max", "last")

NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9._-]{0,100}")


@dataclass
class AggregatedMetric:
    """The running aggregate of one tenant's metric under one aggregator."""

    sandbox_id: str
    store: str
    metric: str
    agg: str
    #: the aggregate so far (the mean for ``avg``)
    value: float
    #: how many values were fired into it
    count: int

    def add(self, value: float) -> None:
        """Fold one fired value into the aggregate."""
        self.count += 1
        if self.agg == "sum":
            self.value += value
        elif self.agg == "avg":
            self.value += (value - self.value) / self.count
        elif self.agg == "min":
            self.value = min(self.value, value)
        elif self.agg == "max":
            self.value = max(self.value, value)
        else:
            self.value = value


def _name(command: Command, field: str, default: str | None = None) -> str:
    name = command.get(field, default)
    if name is None:
        raise CommandError(f"missing {field} name")
    if not isinstance(name, str):
        raise CommandError(f"invalid type for {field} name: {name!r}")
    if NAME_RE.fullmatch(name) is None:
        raise CommandError(f"invalid {field} name {name!r}: expected a letter, then up to 100 "
                           "letters, digits, '.', '_' or '-'")
    return name


def _value(command: Command) -> float:
    value = command.get("value")
    if isinstance(value, bool):
        raise CommandError(f"invalid metric value {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CommandError(f"invalid metric value {value!r}") from None
    if not math.isfinite(number):
        raise CommandError(f"invalid metric value {value!r}: must be a finite number")
    return number


class MetricsConfig(ResourceConfig):
    """Options of the ``metrics`` resource (under ``sandbox.<name>`` in the worker config)."""

    max_metrics_per_tenant: int
    max_metrics: int
    fields = (
        Field("max_metrics_per_tenant", (int,), "distinct metrics (store, name and aggregator) one "
              "sandbox_id may fire between flushes; a fire starting one more fails with the reason",
              100, positive),
        Field("max_metrics", (int,), "distinct metrics all sandbox_ids together may fire between "
              "flushes; a fire starting one more fails with the reason", 10000, positive),
    )


class MetricsResource(SandboxResource):
    """Resource ``metrics``: command ``fire`` with ``store`` (default ``default``), ``metric``, ``value``, ``agg``.

    ``agg`` is one of ``sum``, ``avg``, ``min``, ``max``, ``last``. A
    malformed fire, or one over a cap of :class:`MetricsConfig`, gets a
    failed reply that says what is wrong.
    """

    CONFIG_CLASS: type[MetricsConfig] = MetricsConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")
        self._aggregates: dict[tuple[str, str, str, str], AggregatedMetric] = {}
        #: how many aggregates each sandbox_id holds
        self._per_tenant: Counter[str] = Counter()

    def handle_fire(self, api: SandboxApi, command: Command) -> Command:
        """Validate, aggregate and announce one metric value."""
        store = _name(command, "store", "default")
        metric = _name(command, "metric")
        value = _value(command)
        agg = command.get("agg")
        if agg not in AGGREGATORS:
            raise CommandError(f"invalid metric aggregator {agg!r}: expected one of {', '.join(AGGREGATORS)}")
        key = (api.sandbox_id, store, metric, agg)
        aggregate = self._aggregates.get(key)
        if aggregate is None:
            self._check_caps(api.sandbox_id, store, metric)
            self._aggregates[key] = AggregatedMetric(api.sandbox_id, store, metric, agg, value, 1)
            self._per_tenant[api.sandbox_id] += 1
        else:
            aggregate.add(value)
        api.hooks.notify("metric_fired", sandbox_id=api.sandbox_id, store=store, metric=metric,
                         value=value, agg=agg)
        return self.reply(command)

    def _check_caps(self, sandbox_id: str, store: str, metric: str) -> None:
        options = self.options
        if self._per_tenant[sandbox_id] >= options.max_metrics_per_tenant:
            raise CommandError(f"metric {store}.{metric} refused: this sandbox already fires "
                               f"max_metrics_per_tenant ({options.max_metrics_per_tenant}) distinct metrics; "
                               "reuse a name (new ones are accepted again after the next flush)")
        if len(self._aggregates) >= options.max_metrics:
            raise CommandError(f"metric {store}.{metric} refused: the worker already holds max_metrics "
                               f"({options.max_metrics}) distinct metrics; new ones are accepted again "
                               "after the next flush")

    def aggregates(self) -> list[AggregatedMetric]:
        """The aggregates accumulated since the last :meth:`flush` (copies)."""
        return [AggregatedMetric(**vars(a)) for a in self._aggregates.values()]

    def flush(self) -> list[AggregatedMetric]:
        """Return the aggregates and start new ones (for exporters that publish per interval)."""
        aggregates, self._aggregates = list(self._aggregates.values()), {}
        self._per_tenant.clear()
        return aggregates
