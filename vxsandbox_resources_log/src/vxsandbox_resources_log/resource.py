"""The ``log`` resource: lets a sandboxed app write log lines, tagged with its sandbox_id.

Lines go to Python logging (logger ``vxsandbox.app`` unless configured
otherwise) as ``[<sandbox_id>] <msg>``, with ``sandbox_id`` also set on the
log record for structured formatters. Subclasses send lines elsewhere by
overriding :meth:`LoggingResource.log`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed

from vxsandbox_core import Field, ResourceConfig, SandboxResource, describe_type
from vxsandbox_core.aio import call_deferred
from vxsandbox_core.protocol import Command

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi

#: the shortest max_length that still leaves room for the truncation notice and some text
MIN_MAX_LENGTH = 64


def _at_least_min_length(value: int) -> int:
    if value < MIN_MAX_LENGTH:
        raise ValueError(f"expected at least {MIN_MAX_LENGTH} characters")
    return value


class LoggingConfig(ResourceConfig):
    """Options of the ``log`` resource (under ``sandbox.<name>`` in the worker config)."""

    max_length: int
    logger: str
    fields = (
        Field("max_length", (int,), "characters a log line's message may have; longer ones are cut "
              "and end with '... [truncated N characters]'", 16 * 1024, _at_least_min_length),
        Field("logger", (str,), "name of the Python logger the lines go to", "vxsandbox.app"),
    )


def truncate(msg: str, max_length: int) -> str:
    """Cut ``msg`` to at most ``max_length`` characters, ending with a notice of how much was cut.

    The result, notice included, is never longer than ``max_length``, so
    truncating an already truncated line changes nothing.
    """
    if len(msg) <= max_length:
        return msg
    dropped = len(msg) - max_length
    while True:
        notice = f" ... [truncated {dropped} characters]"
        keep = max(max_length - len(notice), 0)
        if len(msg) - keep == dropped:
            return msg[:keep] + notice
        # The notice grew a digit; drop that much more text and recount.
        dropped = len(msg) - keep


def stringify(value: Any) -> str:
    """Turn a non-string ``msg`` into text: JSON for numbers, booleans, lists and objects."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


class LoggingResource(SandboxResource):
    """Resource ``log``: commands ``log``, ``debug``, ``info``, ``warning``, ``error``, ``critical``.

    Every command takes ``msg`` (required; anything but a string is written
    as JSON) and replies ``success: true`` once the line is logged. ``log``
    also takes ``level``, an integer Python log level (default ``20``, INFO);
    the other commands log at their own level.
    """

    CONFIG_CLASS = LoggingConfig
    options: LoggingConfig

    #: Every level command replies ``success: true`` whenever ``msg`` is given (a line over the
    #: run's cap or one a broken backend lost included), so the child may answer it itself and
    #: no reply crosses back. ``log`` is not listed: its ``level`` can be refused.
    ACKNOWLEDGED = {"debug": "msg", "info": "msg", "warning": "msg", "error": "msg", "critical": "msg"}

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        # One shared logger: a logger per sandbox_id would never be freed by the logging module.
        self.logger = logging.getLogger(self.options.logger)

    def log(self, api: SandboxApi, msg: str, level: int) -> Deferred[None]:
        """Write one line for the sandbox's owner; returns a Deferred that fires once it is written.

        Override this to send lines elsewhere (a database, a per-tenant
        store); ``api.sandbox_id`` says whose line it is. The worker also
        calls it (through ``api.log``) for the child's stderr lines when this
        resource is the ``logging_resource``.
        """
        self.logger.log(level, "[%s] %s", api.sandbox_id, truncate(msg, self.options.max_length),
                        extra={"sandbox_id": api.sandbox_id})
        return succeed(None)

    async def log_command(self, api: SandboxApi, command: Command, level: int) -> Command:
        """Validate ``msg``, log it at ``level`` and build the reply."""
        if command.get("msg") is None:
            return self.reply_error(command, "'msg' is required: the text to log")
        if not api.take_log_lines():
            # Still a success: vumigo_v02 aborts a run whose log request fails.
            return self.reply(command)
        msg = truncate(stringify(command["msg"]), self.options.max_length)
        try:
            await call_deferred(self.log, api, msg, level)
        except Exception:
            # vumigo_v02 aborts the whole run when a log request fails, so a broken
            # log backend must not cost the app its reply: the operator gets the line instead.
            self.logger.exception("[%s] log resource %r could not log a line; it was: %s",
                                  api.sandbox_id, self.name, msg, extra={"sandbox_id": api.sandbox_id})
        return self.reply(command)

    async def handle_log(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at ``level`` (an integer, default INFO = 20)."""
        level = command.get("level")
        if level is None:
            level = logging.INFO
        elif not isinstance(level, int) or isinstance(level, bool) or level < 0:
            return self.reply_error(command, f"'level' must be a non-negative integer log level "
                                    "(10 debug, 20 info, 30 warning, 40 error, 50 critical), "
                                    f"got {describe_type(level)}")
        return await self.log_command(api, command, level)

    async def handle_debug(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at DEBUG."""
        return await self.log_command(api, command, logging.DEBUG)

    async def handle_info(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at INFO."""
        return await self.log_command(api, command, logging.INFO)

    async def handle_warning(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at WARNING."""
        return await self.log_command(api, command, logging.WARNING)

    async def handle_error(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at ERROR."""
        return await self.log_command(api, command, logging.ERROR)

    async def handle_critical(self, api: SandboxApi, command: Command) -> Command:
        """Log ``msg`` at CRITICAL."""
        return await self.log_command(api, command, logging.CRITICAL)
