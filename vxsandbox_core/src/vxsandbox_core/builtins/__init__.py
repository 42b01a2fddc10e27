"""Resources built into vxsandbox-core: ``config`` (app configuration), ``metrics`` (app metrics), ``run`` (done)."""

from .config import ConfigResource, ConfigResourceConfig
from .metrics import AGGREGATORS, AggregatedMetric, MetricsResource
from .run import RunResource

__all__ = [
    "AGGREGATORS",
    "AggregatedMetric",
    "ConfigResource",
    "ConfigResourceConfig",
    "MetricsResource",
    "RunResource",
]
