"""vxsandbox-resources-http: the ``http`` resource, HTTP requests for sandboxed apps to guarded destinations."""

from .config import HttpClientConfig
from .errors import DataLimitError, DestinationRefusedError, HeaderLimitError, HttpResourceError
from .guard import DestinationGuard, HostRules
from .resource import HttpClientResource

__version__ = "1.4.2"

__all__ = [
    "DataLimitError",
    "DestinationGuard",
    "DestinationRefusedError",
    "HeaderLimitError",
    "HostRules",
    "HttpClientConfig",
    "HttpClientResource",
    "HttpResourceError",
    "__version__",
]
