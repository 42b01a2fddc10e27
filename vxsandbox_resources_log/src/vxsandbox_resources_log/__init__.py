"""vxsandbox-resources-log: the ``log`` resource, through which a sandboxed app writes log lines."""

from .resource import LoggingConfig, LoggingResource, stringify, truncate

__version__ = "1.4.2"

__all__ = ["LoggingConfig", "LoggingResource", "__version__", "stringify", "truncate"]
