"""The opt-out policy plugin: new messages to an opted-out address are refused.

Registered through the ``vxsandbox`` entry point group as ``optout``. On
``command_received`` it looks at every ``<resource>.send_to`` and
``<resource>.send_to_endpoint`` request carrying a string ``to_addr``; when
the worker has an ``optout`` resource (any name) and that address opted out
of the run's tenant under the resource's ``address_type``, it answers the
request itself with ``success: false`` and the message is never built.
Replies (``reply_to``, ``reply_to_group``) answer the address's own message
and stay allowed, as in Vumi Go. The outbound resource is never imported:
the request is recognised by its command name alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vxsandbox_core import hookimpl
from vxsandbox_core.protocol import Command, make_error_reply
from vxsandbox_resources_kv import BackendUnavailableError

from .resources import OptoutResource

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi

SEND_COMMANDS = ("send_to", "send_to_endpoint")


@hookimpl
def command_received(api: SandboxApi, command: Command) -> Any:
    """Refuse ``send_to`` and ``send_to_endpoint`` to an opted-out ``to_addr``; leave every other request alone."""
    _, _, name = command.get("cmd", "").rpartition(".")
    to_addr = command.get("to_addr")
    if name not in SEND_COMMANDS or not isinstance(to_addr, str):
        return None
    optouts = [r for r in api.resources.resources.values() if isinstance(r, OptoutResource)]
    if not optouts:
        return None
    return _check(api, command, to_addr, optouts)


async def _check(api: SandboxApi, command: Command, to_addr: str, optouts: list[OptoutResource]) -> Command | None:
    for resource in optouts:
        try:
            opted_out = await resource.is_opted_out(api.sandbox_id, to_addr)
        except BackendUnavailableError as e:
            # Sending without knowing would ignore an opt-out: refuse and say why.
            return make_error_reply(command, f"cannot check opt-outs for 'to_addr' {to_addr!r}: {e}")
        if opted_out:
            reason = (f"'to_addr' {to_addr!r} has opted out ({resource.options.address_type}, "
                      f"resource {resource.name!r}); new messages to it are refused")
            api.report(f"{command['cmd']}: {reason}", logging.INFO)
            return make_error_reply(command, reason)
    return None
