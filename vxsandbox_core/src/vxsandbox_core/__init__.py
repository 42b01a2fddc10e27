"""vxsandbox-core: the sandbox JSON-line protocol, command dispatch, plugins and the generic worker."""

from .api import SandboxApi
from .config import Config, Field, ResourceConfig, SandboxConfig
from .errors import (
    BrokerError,
    CommandError,
    ConfigError,
    ConfigErrors,
    MessageError,
    ProtocolError,
    SandboxRefusedError,
    VxSandboxError,
)
from .hookspecs import hookimpl
from .message import TransportEvent, TransportUserMessage
from .process import SandboxChild, SandboxResult
from .resources import SandboxResource, SandboxResources, describe_field, describe_type
from .worker import Sandbox

__version__ = "1.4.2"

__all__ = [
    "BrokerError",
    "CommandError",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Field",
    "MessageError",
    "ProtocolError",
    "ResourceConfig",
    "Sandbox",
    "SandboxApi",
    "SandboxChild",
    "SandboxConfig",
    "SandboxRefusedError",
    "SandboxResource",
    "SandboxResources",
    "SandboxResult",
    "TransportEvent",
    "TransportUserMessage",
    "VxSandboxError",
    "__version__",
    "describe_field",
    "describe_type",
    "hookimpl",
]
