"""The ``time`` resource: the current time, as the worker's clock sees it, for sandboxed apps.

A sandboxed child has no trustworthy clock of its own (its environment is
empty and its timezone unknown); this resource answers with the worker's.
Commands:

- ``time.now``: replies ``timestamp`` (``"%Y-%m-%d %H:%M:%S.%f"``, Vumi's
  format, in the configured offset), ``unix`` (seconds since the epoch) and
  ``offset_minutes``.
- ``time.format`` with ``format`` (a ``strftime`` pattern of at most
  ``max_format_length`` characters) and optionally ``unix``: replies
  ``text``, that moment (default: now) formatted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from vxsandbox_core import CommandError, Field, ResourceConfig, SandboxResource, describe_type
from vxsandbox_core.config import positive

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi
    from vxsandbox_core.protocol import Command

VUMI_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _offset(value: int) -> int:
    if not -14 * 60 <= value <= 14 * 60:
        raise ValueError("expected minutes from -840 to 840")
    return value



class TimeConfig(ResourceConfig):
    """Options of the ``time`` resource (under ``sandbox.<name>`` in the worker config)."""

    offset_minutes: int
    max_format_length: int

    fields = (
        Field("offset_minutes", (int,), "minutes east of UTC that replies are given in (e.g. 120 for SAST)",
              0, _offset),
        Field("max_format_length", (int,), "longest strftime pattern time.format accepts", 100, positive),
    )


class TimeResource(SandboxResource):
    """Resource ``time``: commands ``now`` and ``format``.

    :attr clock: returns seconds since the epoch; tests replace it.
    """

    CONFIG_CLASS = TimeConfig
    options: TimeConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.zone = timezone(timedelta(minutes=self.options.offset_minutes))
        self.clock: Callable[[], float] = time.time

    def _moment(self, unix: float) -> datetime:
        return datetime.fromtimestamp(unix, self.zone)

    def handle_now(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the current time."""
        unix = self.clock()
        return self.reply(command, timestamp=self._moment(unix).strftime(VUMI_FORMAT), unix=unix,
                          offset_minutes=self.options.offset_minutes)

    def handle_format(self, api: SandboxApi, command: Command) -> Command:
        """Reply with a moment (``unix``, default now) formatted with ``format``."""
        pattern = command.get("format")
        if not isinstance(pattern, str) or not pattern:
            raise CommandError("'format' must be a non-empty strftime pattern")
        if len(pattern) > self.options.max_format_length:
            raise CommandError(f"'format' is longer than {self.options.max_format_length} characters")
        unix = command.get("unix", None)
        if unix is None:
            unix = self.clock()
        elif isinstance(unix, bool) or not isinstance(unix, (int, float)):
            raise CommandError(f"'unix' must be a number of seconds, got {describe_type(unix)}")
        try:
            text = self._moment(unix).strftime(pattern)
        except (ValueError, OverflowError, OSError) as e:
            raise CommandError(f"cannot format {unix!r} with {pattern!r}: {e}") from None
        return self.reply(command, text=text)
