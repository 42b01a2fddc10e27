"""vxsandbox-resources-outbound (skeleton until its issue lands)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
