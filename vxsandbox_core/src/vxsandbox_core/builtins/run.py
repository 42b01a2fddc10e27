"""The ``run`` resource: lets a sandbox written in any language say that it has handled its message.

A child that sends ``{"cmd": "run.done"}`` ends its run successfully. For a
warm child (``messages_per_process`` above 1) the process stays alive for the
next message of the same tenant; a cold child is ended. Without this
resource a generic child ends its run by exiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import ResourceConfig
from ..protocol import Command
from ..resources import SandboxResource

if TYPE_CHECKING:
    from ..dispatch import SandboxApi


class RunResource(SandboxResource):
    """Resource ``run``: command ``done`` ends the current run as a success (no reply is sent)."""

    #: it takes no options beyond ``cls``
    CONFIG_CLASS = ResourceConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")

    def handle_done(self, api: SandboxApi, command: Command) -> None:
        api.sandbox_finish()
