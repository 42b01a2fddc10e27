"""Resources: the only capabilities a sandbox has, each answering ``name.command`` requests.

A resource subclasses :class:`SandboxResource` and defines ``handle_<command>``
methods taking ``(api, command)`` and returning a reply (or ``None`` for no
reply), directly, as a Deferred or from an ``async def``. Resources live for
the worker's lifetime; per-run state belongs on the :class:`SandboxApi`.

The base class is the resource author's toolkit: it parses the options of
``CONFIG_CLASS`` into ``self.options``, gives ``self.reactor``, and builds
replies; a handler fails a request by raising :class:`CommandError`, whose
reason should describe a wrong value with :func:`describe_type` (or a field
that may be missing with :func:`describe_field`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet.defer import Deferred, maybeDeferred

from .aio import call_deferred, default_reactor
from .config import ResourceConfig
from .errors import ConfigError, raise_config_errors
from .protocol import Command, make_error_reply, make_reply
from .registry import resolve_resource

if TYPE_CHECKING:
    from .api import SandboxApi

log = logging.getLogger(__name__)


def describe_type(value: Any) -> str:
    """Describe a wrong value from a request as the app's author sees it: its JSON type, and the value when short.

    For example ``a string "10"``, ``a number 1.5``, ``a boolean true``,
    ``null``, or ``an array`` when its JSON is too long to quote. Every
    resource's error replies say ``got <this>``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        name = "a boolean"
    elif isinstance(value, (int, float)):
        name = "a number"
    elif isinstance(value, str):
        name = "a string"
    elif isinstance(value, (list, tuple)):
        name = "an array"
    elif isinstance(value, dict):
        name = "an object"
    else:
        return f"a {type(value).__name__}"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return name
    return f"{name} {text}" if len(text) <= 40 else name


def describe_field(command: Command, key: str) -> str:
    """Describe what a request carried for ``key``: ``nothing`` when absent, else :func:`describe_type` of it."""
    return describe_type(command[key]) if key in command else "nothing"


class SandboxResource:
    """Base class of every resource.

    :param name: the name the sandbox uses (the key under ``sandbox`` in the config).
    :param worker: the worker that owns the resource.
    :param config: the resource's config mapping (including ``cls``).
    :raises ConfigError: ``config`` does not fit ``CONFIG_CLASS``; the error names ``sandbox.<name>.<key>``.
    """

    #: the options this resource takes (a :class:`ResourceConfig` subclass); parsed into ``self.options``
    CONFIG_CLASS: ClassVar[type[ResourceConfig]] = ResourceConfig

    #: commands a child may answer itself: command (without the resource's name) -> the field
    #: whose presence (not null) makes the reply exactly ``success: true``, with nothing else in
    #: it. A request the child marks ``acknowledged: true`` for such a command is handled as
    #: usual, but its successful reply is not sent (a failed one is, and logged as a warning).
    #: List a command only when its reply tells the app nothing: the ``log`` resource's lines.
    ACKNOWLEDGED: ClassVar[Mapping[str, str]] = {}

    #: commands whose successful reply a child may keep and give itself: command (without the
    #: resource's name) -> the string field the reply depends on. List a command only when its
    #: reply to the same value of that field is the same for as long as the worker runs (the
    #: ``config`` resource's ``get``): a child asking again for a value it has a reply to is
    #: answered without a request, which the worker, its hooks and ``max_requests_per_run``
    #: never see. A subclass whose replies can change must set this to ``{}``.
    FIXED: ClassVar[Mapping[str, str]] = {}

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        self.name = name
        self.worker = worker
        self.config = config
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")

    @property
    def reactor(self) -> Any:
        """The worker's reactor (tests give theirs a ``task.Clock``), else Twisted's global one."""
        return default_reactor(getattr(self.worker, "reactor", None))

    def setup(self) -> Any:
        """Prepare shared state (connections, pools) when the worker starts; may return a Deferred."""

    def teardown(self) -> Any:
        """Release what :meth:`setup` acquired when the worker stops; may return a Deferred."""

    def sandbox_init(self, api: SandboxApi) -> Any:
        """Prepare a new child before its first message reaches it; may return a Deferred.

        Called once per child process, with the API of its first run; a warm
        child serving further messages of the same tenant is not initialised again.
        """

    def reply(self, command: Command, **fields: Any) -> Command:
        """Build a successful reply to ``command`` (``success`` may be overridden in ``fields``)."""
        success = fields.pop("success", True)
        return make_reply(command, success=success, **fields)

    def reply_error(self, command: Command, reason: str) -> Command:
        """Build a failed reply to ``command`` carrying ``reason``."""
        return make_error_reply(command, reason)

    def dispatch_request(self, api: SandboxApi, command: Command) -> Deferred[Command | None]:
        """Call ``handle_<command>`` for a request whose resource prefix is stripped.

        ``command["cmd"]`` is the part after ``name.``; a resource with no
        handler for it kills the sandbox, as Vumi always did.
        """
        method = "handle_" + command["cmd"].replace("-", "_")
        handler = getattr(self, method, None) if method.isidentifier() else None
        if handler is None:
            return maybeDeferred(self.unknown_request, api, command)
        return call_deferred(handler, api, command)

    def unknown_request(self, api: SandboxApi, command: Command) -> None:
        """Kill the sandbox that asked for a command this resource does not have."""
        api.sandbox_kill(
            "unknown command",
            f"resource {self.name!r} has no command {command['cmd']!r}; killing the sandbox")


class UnknownResource(SandboxResource):
    """Stands for any resource name that is not configured: every request kills the sandbox."""

    def dispatch_request(self, api: SandboxApi, command: Command) -> Deferred[Command | None]:
        return maybeDeferred(
            api.sandbox_kill, "unknown resource",
            f"no resource named {self.name!r} for command {command.get('full_cmd', command['cmd'])!r}; "
            "killing the sandbox")


class SandboxResources:
    """The worker's resources, built from the ``sandbox`` config mapping."""

    def __init__(self, worker: Any, config: dict[str, dict[str, Any]], prefix: str = "sandbox.") -> None:
        self.worker = worker
        self.resources: dict[str, SandboxResource] = {}
        errors: list[ConfigError] = []
        for name, rconfig in config.items():
            # Every resource is built, so one run names the mistakes of all of them.
            try:
                cls = resolve_resource(rconfig.get("cls"), key=f"{prefix}{name}.cls")
                self.resources[name] = cls(name, worker, rconfig)
            except ConfigError as e:
                errors.append(e)
        raise_config_errors(errors)
        #: every resource's :attr:`~SandboxResource.ACKNOWLEDGED`, under the name it is mounted at
        self.acknowledged: dict[str, str] = {}
        #: every resource's :attr:`~SandboxResource.FIXED`, under the name it is mounted at
        self.fixed: dict[str, str] = {}
        for name, resource in self.resources.items():
            self._acknowledge(name, resource)

    def get(self, name: str) -> SandboxResource:
        """Return the resource called ``name``, or one that kills sandboxes asking for it."""
        resource = self.resources.get(name)
        return resource if resource is not None else UnknownResource(name, self.worker, {})

    def add(self, name: str, resource: SandboxResource) -> None:
        """Add a resource the worker supplies itself (e.g. the JS worker's ``js`` resource)."""
        if name in self.resources:
            raise ConfigError(f"sandbox.{name}", "is reserved for the worker's own resource")
        self.resources[name] = resource
        self._acknowledge(name, resource)

    def _acknowledge(self, name: str, resource: SandboxResource) -> None:
        for command, field in resource.ACKNOWLEDGED.items():
            self.acknowledged[f"{name}.{command}"] = field
        for command, field in resource.FIXED.items():
            self.fixed[f"{name}.{command}"] = field

    async def setup(self) -> None:
        """Set up every resource, in config order; the first failure stops startup."""
        for resource in self.resources.values():
            await call_deferred(resource.setup)

    async def teardown(self) -> None:
        """Tear down every resource; a failure is logged and the rest still run."""
        for name, resource in self.resources.items():
            try:
                await call_deferred(resource.teardown)
            except Exception:
                log.exception("resource %r failed to tear down", name)

    async def sandbox_init(self, api: SandboxApi) -> None:
        """Let every resource prepare a new run."""
        for resource in self.resources.values():
            await call_deferred(resource.sandbox_init, api)
