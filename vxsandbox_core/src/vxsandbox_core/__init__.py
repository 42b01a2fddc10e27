"""vxsandbox-core: the sandbox process protocol, command dispatch, plugins and the generic worker."""

from .config import Config, Field, ResourceConfig, SandboxConfig
from .dispatch import CommandError, SandboxApi
from .errors import ConfigError, ConfigErrors, MessageError, ProtocolError, VxSandboxError
from .hookspecs import hookimpl
from .message import TransportEvent, TransportUserMessage
from .process import SandboxProtocol, SandboxResult
from .resources import SandboxResource, SandboxResources
from .worker import Sandbox, SandboxRefusedError

__version__ = "1.0.0"

__all__ = [
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
    "SandboxConfig",
    "SandboxProtocol",
    "SandboxRefusedError",
    "SandboxResource",
    "SandboxResources",
    "SandboxResult",
    "TransportEvent",
    "TransportUserMessage",
    "VxSandboxError",
    "__version__",
    "hookimpl",
]
