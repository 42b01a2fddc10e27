"""Hook specifications: the points where plugins observe or adjust a sandbox's life, or add commands.

Plugins implement these with ``@vxsandbox_core.hookimpl`` and register through
the ``vxsandbox`` entry point group. Hooks are called synchronously by pluggy;
an implementation may return a Deferred or be ``async def`` where its spec
says the result is awaited. An observer that raises is logged and never
breaks a sandbox run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .api import SandboxApi
    from .cli import Commands
    from .process import SandboxResult
    from .protocol import Command

hookspec = pluggy.HookspecMarker("vxsandbox")
hookimpl = pluggy.HookimplMarker("vxsandbox")


@hookspec
def child_started(api: SandboxApi, pid: int | None) -> None:
    """Observe a sandboxed child taken into service for its first run (spawned now, or pre-started).

    A warm child serving later messages does not fire this again.

    :param api: the API of the child's first run; ``api.sandbox_id`` names the tenant.
    :param pid: the child's process id, or ``None`` for a child that is not
        an OS process (a test double).
    """


@hookspec
def run_started(api: SandboxApi) -> None:
    """Observe the start of a sandbox run (one message or event), once its child is ready.

    Fires for every run, in a new child or a warm one, just before the
    message is written to the child; :func:`run_ended` always follows.

    :param api: the run's API; ``api.sandbox_id`` names the tenant.
    """


@hookspec
def run_ended(api: SandboxApi, result: SandboxResult) -> None:
    """Observe the end of a sandbox run (one message or event), started by :func:`run_started`.

    :param api: the run's API.
    :param result: how it ended: ``finished`` (the app said done),
        ``exit_code`` or ``signal``, ``kill_reason`` when the worker killed
        the child (timeout, recv_limit, unknown command, ...), ``duration``,
        and ``retired`` (False when the child was kept warm for another run).
    """


@hookspec(firstresult=True)
def command_received(api: SandboxApi, command: Command) -> Any:
    """Inspect a request from the child before its resource sees it, and optionally answer it.

    Stops at the first non-``None`` result. A request a warm child answers itself from a
    reply it kept (a resource's :attr:`~vxsandbox_core.resources.SandboxResource.FIXED`
    command asked again) is never sent, so it never reaches this hook.

    :param api: the run's API.
    :param command: the decoded request (``cmd`` is the full ``resource.command``).
    :return: ``None`` to let the resource handle the command; otherwise a reply
        dict (or a Deferred or coroutine giving one) that is sent to the child
        instead, and the resource is never called. Build replies with
        :func:`vxsandbox_core.protocol.make_reply`.
    """


@hookspec
def reply_sent(api: SandboxApi, command: Command, reply: Command) -> None:
    """Observe a reply written to the child, or one the child gave itself (an ``acknowledged`` request).

    Not called for a reply a child gives from one it kept (a ``FIXED`` command asked again): that
    request is never sent.

    :param api: the run's API.
    :param command: the request being answered.
    :param reply: the reply as sent; ``reply["success"]`` tells the outcome.
    """


@hookspec
def message_processed(sandbox_id: str | None, message: Any, outcome: str, duration: float) -> None:
    """Observe the end of one message's (or event's) handling.

    :param sandbox_id: the tenant, or ``None`` when the message named none.
    :param message: the :class:`vxsandbox_core.message.Message` handled.
    :param outcome: ``"ok"`` (the run ended normally), ``"error"`` (the child
        failed or was killed), ``"refused"`` (no sandbox could be picked or
        started for it) or ``"interrupted"`` (its run was killed while the worker
        stopped, or for another run's fault beside it in one child: the message
        is delivered again).
    :param duration: seconds from receipt to the end of the run.
    """


@hookspec
def metric_fired(sandbox_id: str, store: str, metric: str, value: float, agg: str) -> None:
    """Observe a metric an app fired through the ``metrics`` resource.

    :param sandbox_id: the tenant that fired it.
    :param store: the app's metric store name.
    :param metric: the metric name.
    :param value: the value fired.
    :param agg: how it aggregates: ``sum``, ``avg``, ``min``, ``max`` or ``last``.
    """


@hookspec
def register_commands(commands: Commands) -> None:
    """Add subcommands to the ``vxsandbox`` command line (vxsandbox-js adds ``chat`` this way).

    Called once, when ``vxsandbox`` builds its argument parser; the
    ``VXSANDBOX_PLUGINS`` allowlist applies as to every hook.

    :param commands: call ``commands.add(name, run, help)``; it returns the
        command's :class:`argparse.ArgumentParser` for its own arguments (the
        logging options are already there). ``run(args)`` returns the exit
        status, or an awaitable of it, which ``vxsandbox`` runs on the Twisted
        reactor. See :class:`vxsandbox_core.cli.Commands`.
    """
