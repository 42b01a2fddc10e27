"""The ``js`` resource: hands the app's code to the Node.js runner and ends the run on ``js.done``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vxsandbox_core.protocol import Command, make_command
from vxsandbox_core.resources import SandboxResource

#: characters of a path or permission name from the child that a report shows
MAX_SHOWN = 500

if TYPE_CHECKING:
    from vxsandbox_core.api import SandboxApi


class JsSandboxResource(SandboxResource):
    """Resource ``js``: sends ``initialize`` at sandbox init; command ``done`` ends the run successfully.

    The worker supplies the code and context through ``javascript_for_api``
    and ``app_context_for_api``; ``initialize`` also carries ``filename``
    (what stack traces show and where ``require`` resolves modules from) and
    ``acknowledged``, the resources' commands the runner answers itself
    (:attr:`~vxsandbox_core.resources.SandboxResource.ACKNOWLEDGED`).
    """

    def sandbox_init(self, api: SandboxApi) -> None:
        worker: Any = api.worker
        app_fields = getattr(worker, "app_fields", None)
        if app_fields is not None:
            # The same fields as a prefork spare's ``prepare``, so a prepared runner finds them equal.
            fields: dict[str, Any] = app_fields(api)
        else:
            fields = {"javascript": worker.javascript_for_api(api), "app_context": worker.app_context_for_api(api)}
        # What the runner may answer itself: the log lines at once, and the replies that stay the same
        # (config values) once it has them: no round trip for each awaited line or repeated question.
        api.sandbox_send(make_command("initialize", acknowledged=api.resources.acknowledged,
                                      fixed=api.resources.fixed, **fields))

    def handle_access_denied(self, api: SandboxApi, command: Command) -> None:
        """The app died of an access Node's permission model refused: say which path, and the key that allows it.

        Node's own error names no path, so the runner passes on its ``resource``
        and ``permission``. Reported once per run to the owner and the operator;
        no reply is sent.
        """
        resource = command.get("resource")
        permission = command.get("permission")
        path = resource[:MAX_SHOWN] if isinstance(resource, str) else "a path Node did not name"
        kind = permission[:MAX_SHOWN] if isinstance(permission, str) else "access"
        message = (f"Node's permission model refused the app {kind} of {path!r}: only the app, the packages "
                   f"its node_modules resolution loads and the worker config's allow_fs_read may be read; "
                   f"add the path to allow_fs_read if the app must read it")
        run = api.run
        if run is not None:
            run.report_once("access denied", message)
        else:
            api.report(message)

    def handle_done(self, api: SandboxApi, command: Command) -> None:
        """The app is done: end the child, counting the run as a success (no reply is sent)."""
        api.sandbox_finish()
