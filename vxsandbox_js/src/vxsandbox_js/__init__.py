"""vxsandbox-js: JavaScript (Node.js) sandbox workers compatible with the vumigo_v02 toolkit.

Workers ``js`` (:class:`JsSandbox`, app code in the config), ``js-file``
(:class:`JsFileSandbox`, app code in a file) and ``js-standalone``
(:class:`StandaloneJsFileSandbox`, one tenant per worker), the ``js``
resource (:class:`JsSandboxResource`) and the Node.js runner script.
"""

from .node import NodeVersion, find_node, node_version, runner_path
from .resource import JsSandboxResource
from .worker import (
    JsFileSandbox,
    JsFileSandboxConfig,
    JsSandbox,
    JsSandboxConfig,
    StandaloneJsFileSandbox,
)

__version__ = "1.4.2"

__all__ = [
    "JsFileSandbox",
    "JsFileSandboxConfig",
    "JsSandbox",
    "JsSandboxConfig",
    "JsSandboxResource",
    "NodeVersion",
    "StandaloneJsFileSandbox",
    "__version__",
    "find_node",
    "node_version",
    "runner_path",
]
