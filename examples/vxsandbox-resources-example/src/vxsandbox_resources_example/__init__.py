"""vxsandbox-resources-example: the ``time`` resource, a template for third-party resources."""

from .resource import TimeConfig, TimeResource

__version__ = "0.1.0"

__all__ = ["TimeConfig", "TimeResource", "__version__"]
