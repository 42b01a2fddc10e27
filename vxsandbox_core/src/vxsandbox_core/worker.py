"""The generic sandbox worker: one sandboxed child run per message or event, transport-agnostic.

The worker picks the tenant (``sandbox_id``) and config for a message, builds
a :class:`SandboxApi` and a :class:`SandboxChild`, runs the child to its
end and reports the outcome through the plugin hooks. Brokers (AMQP or in
memory) feed it messages and carry what it publishes.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from collections.abc import Hashable
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, DeferredLock

from .aio import default_reactor
from .api import SandboxApi
from .config import SandboxConfig
from .errors import ConfigError, MessageError, SandboxRefusedError
from .isolation import (
    describe_unreachable,
    effective_isolation,
    isolation_warning,
    unreadable_by_children,
    wrap_command,
)
from .message import Message, TransportEvent, TransportUserMessage
from .plugins import Hooks
from .pool import ChildPool
from .process import SandboxChild, SandboxResult, find_executable
from .resources import SandboxResources
from .rlimits import DEFAULT_RLIMITS, clamp_rlimits, cpu_soft_limit, effective_rlimits, rlimit_argv

log = logging.getLogger("vxsandbox.worker")

#: ``send_to.<endpoint>`` options copied onto new messages (as Vumi's ``send_to`` did with all of them;
#: the addressing and identity fields stay the app's or the message's own)
ENDPOINT_MESSAGE_OPTIONS = ("from_addr", "from_addr_type", "to_addr_type", "provider", "group",
                            "transport_metadata", "helper_metadata")

#: the kill reason of runs ended because the worker is stopping
STOPPING = "worker stopping"
#: the kill reason of runs whose message could not be written to the child
UNDELIVERABLE = "message could not be sent"


class Sandbox:
    """The generic sandbox worker (worker name ``sandbox``).

    :param config: the worker config, as a mapping or an already built config.
    :param broker: what outbound messages are published through: an object
        with ``async publish(routing_key: str, body: bytes)``; ``None`` for a
        worker that never publishes.
    :param hooks: the plugin hooks (defaults to the installed plugins).
    :param reactor: the reactor children are spawned on.
    """

    CONFIG_CLASS: ClassVar[type[SandboxConfig]] = SandboxConfig
    #: rlimits applied unless the config's ``rlimits`` overrides them
    DEFAULT_RLIMITS: ClassVar[dict[str, int]] = DEFAULT_RLIMITS

    def __init__(self, config: dict[str, Any] | SandboxConfig, broker: Any = None,
                 hooks: Hooks | None = None, reactor: Any = None) -> None:
        self.config = config if isinstance(config, SandboxConfig) else self.CONFIG_CLASS(config)
        self.broker = broker
        self.hooks = hooks if hooks is not None else Hooks()
        reactor = default_reactor(reactor)
        self.reactor = reactor
        self.executable = self.find_executable()
        self.rlimits = clamp_rlimits(effective_rlimits(self.config.rlimits, self.DEFAULT_RLIMITS))
        self.resources = SandboxResources(self, self.config.sandbox)
        self.add_default_resources()
        config = self.config
        max_children = config.max_children or 2 * config.amqp_prefetch_count + config.prefork
        self.pool = ChildPool(self._spawn_child, max_children, config.idle_timeout, config.prefork,
                              cpu_soft_limit(self.rlimits), self.reactor)
        self._order_locks: dict[str, DeferredLock] = {}

    # --- overridable pieces ------------------------------------------------------

    def find_executable(self) -> str:
        """The program each run starts (``executable`` in the config)."""
        if self.config.executable is None:
            raise ConfigError("executable", "is required for the generic sandbox worker "
                                            "(the program to run as the sandbox)")
        return find_executable(self.config.executable)

    def add_default_resources(self) -> None:
        """Add resources the worker needs whatever the config says (none for the generic worker)."""

    def sandbox_args(self, api: SandboxApi) -> list[str]:
        """Arguments of the child for this run."""
        return list(api.config.args)

    def read_paths(self, api: SandboxApi) -> list[str]:
        """Files and directories the child must read, beyond its program (for ``isolation: bwrap``).

        The generic worker's child reads the files its ``args`` name (a script for
        its interpreter); a directory named there is not opened up, so an argument
        can never widen the jail's view beyond single files.
        """
        return [arg for arg in api.config.args if os.path.isfile(arg)]

    def sandbox_id_for_message(self, msg: Message) -> str:
        """The tenant a message belongs to: its ``sandbox_id`` field, else the config's.

        :raises SandboxRefusedError: neither gives one, or the message's is not a string
            (mapping ``123`` or ``["x"]`` to the config's tenant would run it as someone it did not name).
        """
        sandbox_id = msg.get("sandbox_id")
        if isinstance(sandbox_id, str) and sandbox_id:
            return sandbox_id
        if sandbox_id is not None and not isinstance(sandbox_id, str):
            text = repr(sandbox_id)
            raise SandboxRefusedError(f"field 'sandbox_id': expected a string, got {type(sandbox_id).__name__} "
                                      f"{text if len(text) <= 80 else text[:80] + '...'}")
        if self.config.sandbox_id:
            return self.config.sandbox_id
        raise SandboxRefusedError(
            "message has no 'sandbox_id' and the worker config sets no 'sandbox_id'")

    def config_for_message(self, msg: Message) -> SandboxConfig:
        """The config a message's run uses (the worker's own unless a subclass varies it)."""
        return self.config

    def create_sandbox_api(self, sandbox_id: str, config: SandboxConfig) -> SandboxApi:
        return SandboxApi(self.resources, config, sandbox_id, self, self.hooks)

    def child_key(self, api: SandboxApi) -> Hashable:
        """What a warm child is reused for: the tenant and everything that shapes its process.

        Subclasses add the version of the app's code, so an edited app never
        runs in a child that loaded the old one.
        """
        config = api.config
        shape = repr((self.child_shape(api), sorted(config.env.items()), config.path)).encode()
        return (api.sandbox_id, hashlib.sha256(shape).hexdigest())

    def child_shape(self, api: SandboxApi) -> list[str]:
        """The arguments that tell one kind of child from another in :meth:`child_key` (``sandbox_args``).

        A subclass whose ``sandbox_args`` can start the same program two ways
        (the JavaScript workers: from ``runner.js`` or from a startup snapshot)
        returns one of them, so a warm child started the other way is reused.
        """
        return self.sandbox_args(api)

    def child_for_message(self, msg: Message | None, api: SandboxApi) -> SandboxChild:
        """Build (not spawn) a child for ``api``'s config; ``msg`` is None for a pre-started spare."""
        config = api.config
        argv = rlimit_argv(self.rlimits) + [self.executable, *self.sandbox_args(api)]
        argv = wrap_command(config, argv, self.read_paths(api))
        return SandboxChild(argv, dict(config.env), config.path, config.recv_limit,
                               max_runs=config.messages_per_process,
                               max_requests=config.max_requests_per_run,
                               max_pending=config.max_pending_requests,
                               stdin_limit=config.stdin_limit, reactor=self.reactor,
                               runs_at_once=min(config.runs_per_child, config.messages_per_process))

    def _spawn_child(self, api: SandboxApi | None) -> SandboxChild:
        child = self.child_for_message(None, api or self._template_api())
        child.spawn()
        return child

    def _template_api(self) -> SandboxApi:
        # Spares are started for the worker's own config before any tenant is known.
        return self.create_sandbox_api("", self.config)

    def kill_all(self) -> Deferred[Any]:
        """Kill every live child (runs in progress end as killed); fires once all have ended."""
        self.pool.stop_prefork()
        return self.pool.kill_all(STOPPING)

    # --- lifecycle ---------------------------------------------------------------

    async def setup(self) -> None:
        """Set up the resources and start the pre-started children; call once before processing messages."""
        warning = isolation_warning(self.config.isolation)
        if warning is not None:
            log.warning("%s", warning)
        closed = self.unreachable_by_children()
        if closed:
            log.warning("%s", describe_unreachable(closed))
        await self.resources.setup()
        self.pool._top_up()

    def unreachable_by_children(self) -> list[str]:
        """What a root worker's unjailed children could not run or read, each as ``"<path>: <why>"``.

        Empty unless the worker runs as root with ``isolation`` (in effect) ``none``: its children
        then run as unprivileged uids, and the program, runner and app must be open to other users.
        """
        if os.geteuid() != 0 or effective_isolation(self.config.isolation) != "none":
            return []
        return unreadable_by_children(self.read_paths(self._template_api()), programs=[self.executable])

    async def teardown(self) -> None:
        """Kill every child, wait for them to end, and tear the resources down."""
        await self.kill_all()
        await self.resources.teardown()

    async def process_message(self, msg: TransportUserMessage) -> str:
        """Run the sandbox for a user message; returns the outcome.

        ``ok`` (the run ended normally), ``error`` (the app failed or was killed
        for misbehaving), ``refused`` (no sandbox could be picked for it) or
        ``interrupted`` (the worker was stopping and killed the run, or the run
        was killed for the fault of another run beside it in the same child: the
        message was not handled, through no fault of its own, and should be
        delivered again).
        """
        return await self._process(msg, lambda api: api.sandbox_inbound_message(msg))

    async def process_event(self, event: TransportEvent) -> str:
        """Run the sandbox for an event; returns the outcome."""
        return await self._process(event, lambda api: api.sandbox_inbound_event(event))

    async def _process(self, msg: Message, deliver: Any) -> str:
        started = time.monotonic()
        sandbox_id: str | None = None
        outcome = "refused"
        try:
            sandbox_id = self.sandbox_id_for_message(msg)
            if not os.access(self.executable, os.X_OK):
                # Every run would fail the same way: keep the message (dead-lettered) for after the fix.
                raise SandboxRefusedError(f"the sandbox program {self.executable} is missing or not executable")
            api = self.create_sandbox_api(sandbox_id, self.config_for_message(msg))
            if api.config.ordered:
                lock = self._order_locks.setdefault(sandbox_id, DeferredLock())
                await lock.acquire()
                try:
                    result = await self.run_sandbox(api, deliver)
                finally:
                    lock.release()
                    if not lock.locked and not lock.waiting:
                        self._order_locks.pop(sandbox_id, None)
            else:
                result = await self.run_sandbox(api, deliver)
            if result.kill_reason == STOPPING or result.bystander:
                outcome = "interrupted"
            else:
                outcome = "ok" if result.ok else "error"
        except SandboxRefusedError as e:
            log.warning("refused %s %s: %s", msg.message_type, _message_ref(msg), e)
        finally:
            self.hooks.notify("message_processed", sandbox_id=sandbox_id, message=msg,
                              outcome=outcome, duration=time.monotonic() - started)
        return outcome

    async def run_sandbox(self, api: SandboxApi, deliver: Any) -> SandboxResult:
        """Get a child (warm, pre-started or new), let resources initialise a fresh one, deliver, wait.

        The child goes back to the pool however the run ends, so no failure can leak one of
        ``max_children``'s slots.

        :raises SandboxRefusedError: the message could not be written to the child (the child is
            killed and the message should be dead-lettered).
        """
        key = self.child_key(api)
        child, fresh = await self.pool.acquire(key, api, spare_ok=api.config is self.config)
        result: SandboxResult | None = None
        undeliverable: Exception | None = None
        try:
            run = child.start_run(api, api.config.timeout)
            if fresh:
                self.hooks.notify("child_started", api=api, pid=child.pid)
                try:
                    await self.resources.sandbox_init(api)
                except Exception as e:
                    log.exception("[%s] sandbox_init failed", api.sandbox_id)
                    api.sandbox_kill("init failed", f"sandbox could not be initialised: {type(e).__name__}: {e}")
            self.hooks.notify("run_started", api=api)
            if not run.called:
                try:
                    deliver(api)
                except Exception as e:
                    # Nothing was written (encoding comes first), but the run cannot go on without its message.
                    undeliverable = e
                    child.kill(UNDELIVERABLE, api.run)
            result = await run
        finally:
            # None: the wait itself failed (cancelled, or a bug above); the child cannot be trusted.
            self.pool.release(child, key, result)
        if undeliverable is not None:
            self.hooks.notify("run_ended", api=api, result=result)
            raise SandboxRefusedError(f"the message could not be sent to the sandbox: "
                                      f"{type(undeliverable).__name__}: {undeliverable}")
        if not result.ok:
            log.warning("[%s] sandbox run %s after %.3fs", api.sandbox_id, result.describe(), result.duration)
            if result.kill_reason is None:
                # A kill explains itself to the owner; a crash or an outside signal needs saying.
                api.log(f"sandbox run {result.describe()}", logging.ERROR)
        self.hooks.notify("run_ended", api=api, result=result)
        return result

    # --- publishing (used by the outbound resource) -----------------------------------

    def endpoint_transport_name(self, endpoint: str | None) -> str:
        """The transport an endpoint sends through: its ``send_to`` ``transport_name``, else the worker's.

        :raises SandboxRefusedError: the endpoint is not configured, or has no transport to send through.
        """
        name = endpoint or "default"
        transport_name: str | None
        if name in self.config.send_to:
            transport_name = self.config.send_to[name].get("transport_name") or self.config.transport_name
        elif name == "default":
            transport_name = self.config.transport_name
        else:
            raise SandboxRefusedError(
                f"endpoint {name!r} is not configured in 'send_to' "
                f"(configured: {sorted(self.config.send_to) or 'none'})")
        if not transport_name:
            raise SandboxRefusedError("no transport_name to publish to: set 'transport_name' in the worker config")
        return transport_name

    def routing_key_for(self, endpoint: str | None) -> str:
        """The ``<transport_name>.outbound`` queue an endpoint publishes to.

        :raises SandboxRefusedError: the endpoint is not configured.
        """
        return f"{self.endpoint_transport_name(endpoint)}.outbound"

    def endpoint_message(self, endpoint: str, to_addr: str | None, content: str | None, *,
                         default_transport_type: str, helper_metadata: dict[str, Any] | None = None,
                         ) -> TransportUserMessage:
        """Build a new message (not a reply) for ``endpoint`` from its ``send_to`` options.

        The endpoint's :data:`ENDPOINT_MESSAGE_OPTIONS` are copied onto the
        message, ``helper_metadata`` (the app's, already checked) is merged
        over the endpoint's, and ``transport_type`` is the endpoint's or else
        ``default_transport_type``. The one rule for new messages: the
        ``outbound`` resource and :class:`~vxsandbox_core.testing.StubOutboundResource`
        both use it.

        :raises SandboxRefusedError: the endpoint is not configured, or its
            options do not make a valid message (also logged for the operator).
        """
        transport_name = self.endpoint_transport_name(endpoint)
        options = copy.deepcopy(self.config.send_to.get(endpoint) or {})
        fields = {k: options[k] for k in ENDPOINT_MESSAGE_OPTIONS if k in options}
        if helper_metadata:
            fields["helper_metadata"] = {**(fields.get("helper_metadata") or {}), **helper_metadata}
        transport_type = options.get("transport_type") or default_transport_type
        try:
            return TransportUserMessage.send(to_addr, content, transport_name=transport_name,
                                             transport_type=transport_type, endpoint=endpoint, **fields)
        except MessageError as e:
            log.error("send_to.%s options make an invalid message: %s", endpoint, e)
            raise SandboxRefusedError(f"the options configured for endpoint {endpoint!r} "
                                      f"do not make a valid message ({e})") from None

    async def publish_message(self, msg: TransportUserMessage, endpoint: str | None = None) -> None:
        """Publish an outbound message through the broker to the endpoint's transport."""
        if self.broker is None:
            raise SandboxRefusedError("this worker has no broker to publish through")
        if endpoint is None:
            endpoint = msg["routing_metadata"].get("endpoint_name")
        if endpoint is not None and endpoint != "default":
            msg["routing_metadata"]["endpoint_name"] = endpoint
        routing_key = self.routing_key_for(endpoint)
        await self.broker.publish(routing_key, msg.to_json().encode("utf-8"))


def _message_ref(msg: Message) -> str:
    return str(msg.get("message_id") or msg.get("event_id") or "?")
