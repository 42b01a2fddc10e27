"""Helpers for the http resource's tests: running a real child through the worker, a scripted resolver."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer

from vxsandbox_core import Sandbox
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message, python_child, python_worker_config


@implementer(IHostnameResolver)
class ScriptedResolver:
    """Resolves names from a table, counting lookups; unknown names resolve to nothing."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> IResolutionReceiver:
        self.lookups.append(hostName)
        receiver.resolutionBegan(None)
        for address in self.table.get(hostName, []):
            cls = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(cls("TCP", address, portNumber))
        receiver.resolutionComplete()
        return receiver


async def run_child(test: Any, requests: list[dict[str, Any]], http: dict[str, Any] | None = None,
                    resolver: Any = None, loopback: bool = True) -> list[dict[str, Any]]:
    """Run a real child that sends ``requests`` to an ``http`` resource configured with ``http``.

    Loopback is allowed (the test server lives there) unless ``loopback`` is false.
    Returns the replies the child received, in request order.
    """
    config: dict[str, Any] = {"cls": "http"}
    if loopback:
        config["allowed_hosts"] = ["127.0.0.0/8"]
    config.update(http or {})
    worker = Sandbox(python_worker_config(python_child(requests), sandbox={"http": config}),
                     broker=RecordingBroker(), hooks=hooks_with())
    await worker.setup()
    if resolver is not None:
        worker.resources.resources["http"].resolver = resolver
    try:
        outcome = await worker.process_message(make_user_message())
    finally:
        await worker.teardown()
    test.assertEqual(outcome, "ok")
    replies = worker.resources.resources["record"].replies()
    test.assertEqual(len(replies), len(requests))
    return replies
