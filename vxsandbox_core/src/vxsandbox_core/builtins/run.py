"""The ``run`` resource: lets a sandbox written in any language say that it has handled its message.

A child that sends ``{"cmd": "run.done"}`` ends its run successfully. For a
warm child (``messages_per_process`` above 1) the process stays alive for the
next message of the same tenant; a cold child is ended. Without this
resource a generic child ends its run by exiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import Command
from ..resources import SandboxResource

if TYPE_CHECKING:
    from ..api import SandboxApi


class RunResource(SandboxResource):
    """Resource ``run``: command ``done`` ends the current run as a success (no reply is sent)."""

    def handle_done(self, api: SandboxApi, command: Command) -> None:
        api.sandbox_finish()
