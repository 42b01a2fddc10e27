"""Resources built into vxsandbox-core: ``config`` (app configuration) and ``metrics`` (app metrics)."""

from .config import ConfigResource, ConfigResourceConfig
from .metrics import AGGREGATORS, AggregatedMetric, MetricsResource

__all__ = [
    "AGGREGATORS",
    "AggregatedMetric",
    "ConfigResource",
    "ConfigResourceConfig",
    "MetricsResource",
]
