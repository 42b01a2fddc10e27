"""vxsandbox-resources-outbound: the ``outbound`` resource, through which a sandboxed app sends messages."""

from .resource import OutboundConfig, OutboundResource

__version__ = "1.4.2"

__all__ = ["OutboundConfig", "OutboundResource", "__version__"]
