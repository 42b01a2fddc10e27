"""The ``js`` resource: hands the app's code to the Node.js runner and ends the run on ``js.done``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vxsandbox_core.protocol import Command, make_command
from vxsandbox_core.resources import SandboxResource

if TYPE_CHECKING:
    from vxsandbox_core.dispatch import SandboxApi


class JsSandboxResource(SandboxResource):
    """Resource ``js``: sends ``initialize`` at sandbox init; command ``done`` ends the run successfully.

    The worker supplies the code and context through ``javascript_for_api``
    and ``app_context_for_api``; ``initialize`` also carries ``filename``
    (what stack traces show and where ``require`` resolves modules from).
    """

    def sandbox_init(self, api: SandboxApi) -> None:
        worker: Any = api.worker
        fields: dict[str, Any] = {
            "javascript": worker.javascript_for_api(api),
            "app_context": worker.app_context_for_api(api),
        }
        app_filename = getattr(worker, "app_filename", None)
        if app_filename is not None:
            fields["filename"] = app_filename(api)
        api.sandbox_send(make_command("initialize", **fields))

    def handle_done(self, api: SandboxApi, command: Command) -> None:
        """The app is done: end the child, counting the run as a success (no reply is sent)."""
        api.sandbox_finish()
