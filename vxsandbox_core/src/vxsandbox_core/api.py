"""Per-run command dispatch: routes ``resource.command`` requests from the child to resources.

One :class:`SandboxApi` exists per sandbox run. It knows the tenant
(``sandbox_id``), the child, the messages this run received, and sends each
reply back with its request's ``cmd_id``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .aio import call_deferred
from .errors import CommandError
from .message import TransportUserMessage
from .plugins import Hooks
from .protocol import Command, make_command, make_error_reply
from .resources import describe_field

if TYPE_CHECKING:
    from .config import SandboxConfig
    from .message import Message
    from .process import SandboxChild, SandboxRun
    from .resources import SandboxResource, SandboxResources

log = logging.getLogger("vxsandbox.sandbox")


class SandboxApi:
    """The worker's side of one sandbox run.

    :param resources: the worker's resources.
    :param config: the config this run uses.
    :param sandbox_id: the tenant this run belongs to.
    :param worker: the worker (resources reach it as ``api.worker``).
    :param hooks: where plugin hooks are called.
    """

    def __init__(self, resources: SandboxResources, config: SandboxConfig, sandbox_id: str,
                 worker: Any, hooks: Hooks) -> None:
        self.resources = resources
        self.config = config
        self.sandbox_id = sandbox_id
        self.worker = worker
        self.hooks = hooks
        self.child: SandboxChild | None = None
        #: this run in its child (None until the child starts it)
        self.run: SandboxRun | None = None
        self.logging_resource = (resources.get(config.logging_resource)
                                 if config.logging_resource else None)
        #: messages this run received, by message_id (outbound may only answer these)
        self.inbound_messages: dict[str, Message] = {}
        #: per-run scratch space for resources, keyed by resource name
        self.state: dict[str, Any] = {}
        #: app log lines (stderr and the log resource) kept and dropped in this run
        self.log_lines = 0
        self.log_lines_dropped = 0

    def set_sandbox(self, child: SandboxChild, run: SandboxRun | None = None) -> None:
        """Attach the child this run talks to, and the run it is there."""
        self.child = child
        self.run = run

    # --- to the child -----------------------------------------------------------

    def _child(self) -> SandboxChild | None:
        # A warm child outlives this run: only act on it while it serves this run, so nothing
        # from an ended run can reach (or kill) the next tenant message.
        child = self.child
        run = self.run
        if child is None or run is None or child.runs.get(run.run_id) is not run:
            return None
        return child

    def sandbox_send(self, command: Command) -> bool:
        """Send a command to the child; False when this run has ended (the command is dropped)."""
        child = self._child()
        return child is not None and child.send(command, self.run)

    def sandbox_kill(self, reason: str, explanation: str | None = None) -> None:
        """Kill the child, reporting ``explanation`` (if given) to the app's owner and the operator."""
        if explanation is not None:
            self.report(explanation, logging.ERROR)
        child = self._child()
        if child is not None:
            child.kill(reason, self.run)

    def sandbox_finish(self) -> None:
        """End this run because the app said it is done; the run counts as a success."""
        child = self._child()
        if child is not None:
            child.finish(self.run)

    def sandbox_inbound_message(self, msg: Message) -> None:
        """Hand a user message to the child as ``inbound-message``."""
        self.inbound_messages[msg["message_id"]] = msg
        self.sandbox_send(make_command("inbound-message", msg=msg.to_dict()))

    def received_message(self, command: Command, field: str = "in_reply_to") -> TransportUserMessage:
        """The user message this run received whose ``message_id`` the request's ``field`` names.

        The one rule for what a reply may answer (the ``outbound`` resource
        and :class:`~vxsandbox_core.testing.StubOutboundResource` both use it):
        only a message handed to this run, never another run's or another
        tenant's, nor an event.

        :raises CommandError: ``field`` is not a non-empty string, or names no
            message this run received; the reason says which.
        """
        message_id = command.get(field)
        if not isinstance(message_id, str) or not message_id:
            raise CommandError(f"{field!r} is required: the message_id of a message this sandbox run "
                               f"received, got {describe_field(command, field)}")
        original = self.inbound_messages.get(message_id)
        if not isinstance(original, TransportUserMessage):
            raise CommandError(f"{field!r}: {message_id!r} is not a message this sandbox run received")
        return original

    def sandbox_inbound_event(self, event: Message) -> None:
        """Hand an event to the child as ``inbound-event``."""
        self.sandbox_send(make_command("inbound-event", msg=event.to_dict()))

    # --- logging --------------------------------------------------------------

    def log(self, msg: str, level: int = logging.INFO) -> Deferred[Any]:
        """Log a line for the app's owner through the logging resource (or the worker's log)."""
        if self.logging_resource is not None and hasattr(self.logging_resource, "log"):
            d = call_deferred(self.logging_resource.log, self, msg, level)
            d.addErrback(lambda f: log.error("[%s] logging resource failed (%s): %s",
                                             self.sandbox_id, f.getErrorMessage(), msg))
            return d
        return call_deferred(log.log, level, "[%s] %s", self.sandbox_id, msg)

    def take_log_lines(self, n: int = 1) -> int:
        """Count ``n`` app log lines against ``max_log_lines_per_run``; returns how many may be written.

        The rest are counted as dropped, so a flood costs one line at the
        run's end (:meth:`report_dropped_log_lines`) instead of one per line.
        """
        allowed = max(0, min(n, self.config.max_log_lines_per_run - self.log_lines))
        self.log_lines += allowed
        self.log_lines_dropped += n - allowed
        return allowed

    def report_dropped_log_lines(self) -> None:
        """Say once how many app log lines this run dropped, if any."""
        if self.log_lines_dropped:
            self.report(f"{self.log_lines_dropped} more log lines dropped in this run "
                        f"(max_log_lines_per_run is {self.config.max_log_lines_per_run})", logging.WARNING)

    def report(self, msg: str, level: int = logging.WARNING) -> None:
        """Tell both the app's owner (logging resource) and the operator (worker log) about a problem."""
        log.log(level, "[%s] %s", self.sandbox_id, msg)
        if self.logging_resource is not None:
            self.log(msg, level)

    # --- from the child -----------------------------------------------------------

    def dispatch_request(self, command: Command) -> Deferred[None]:
        """Handle one request from the child and send its reply.

        (A chain of callbacks rather than a coroutine: most requests are answered at
        once, and a callback on a Deferred that has fired costs a fraction of an await.)
        """
        d = self.hooks.first_result("command_received", api=self, command=command)
        d.addCallback(self._answer, command)
        d.addCallback(self._send_reply, command)
        return d

    def _answer(self, reply: Command | None, command: Command) -> Command | None | Deferred[Command | None]:
        # A hook's answer stands; else the resource the command names answers.
        if reply is not None:
            return reply
        resource_name, sep, rest = command["cmd"].partition(".")
        if not sep:
            resource_name, rest = "", command["cmd"]
        return self.resource_reply(self.resources.get(resource_name),
                                   dict(command, cmd=rest, full_cmd=command["cmd"]))

    def _send_reply(self, reply: Command | None, command: Command) -> None:
        if reply is None:
            return
        reply["cmd"] = command["cmd"]
        reply["cmd_id"] = command["cmd_id"]
        reply["reply"] = True
        if command.get("acknowledged") is True and command["cmd"] in self.resources.acknowledged:
            # The child answered this request itself (its resource allows that for this command).
            if reply.get("success") is True:
                self.hooks.notify("reply_sent", api=self, command=command, reply=reply)
                return
            log.warning("[%s] the child acknowledged %r itself but it failed: %s", self.sandbox_id,
                        command["cmd"], reply.get("reason"))
        if self.sandbox_send(reply):
            self.hooks.notify("reply_sent", api=self, command=command, reply=reply)

    async def call_resource(self, resource: SandboxResource, request: Command) -> Command | None:
        """Have ``resource`` answer ``request`` (its ``cmd`` without the resource's name) in this run.

        The one place a :class:`CommandError` from a handler becomes an error
        reply carrying its reason; any other exception is logged as a bug in
        the resource and also answered with an error reply. Unit tests call
        this to drive a resource as a child would.
        """
        return await self.resource_reply(resource, request)

    def resource_reply(self, resource: SandboxResource, request: Command) -> Deferred[Command | None]:
        """:meth:`call_resource` as a Deferred (what the worker itself calls)."""
        d = call_deferred(resource.dispatch_request, self, request)
        d.addErrback(self._resource_failed, resource, request)
        return d

    def _resource_failed(self, failure: Failure, resource: SandboxResource, request: Command) -> Command | Failure:
        error = failure.value
        if isinstance(error, CommandError):
            return make_error_reply(request, error.reason)
        if not isinstance(error, Exception):
            return failure
        full_cmd = request.get("full_cmd", request["cmd"])
        log.error("[%s] resource %r failed on %r", self.sandbox_id, resource.name, full_cmd,
                  exc_info=(type(error), error, failure.getTracebackObject()))
        reason = f"{full_cmd} failed: {type(error).__name__}: {error}"
        self.log(reason, logging.ERROR)
        return make_error_reply(request, reason)
