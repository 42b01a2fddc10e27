"""Test helpers for vxsandbox and for authors of third-party resources.

- :class:`RecordingBroker` stands in for a broker and keeps what is published.
- :class:`RecordingResource` keeps every request a sandbox sends it.
- :func:`python_child` writes the code of a real sandboxed child (run with
  ``sys.executable -c``) that sends requests, waits for their replies and
  hands the replies to a ``record`` resource, so tests check what a real
  child received over real pipes.
- :func:`python_worker_config` and :func:`run_child` run such a child
  through the generic worker.
- :class:`FakeSandboxApi` drives a resource's handlers without any child.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from .api import SandboxApi
from .config import Field, ResourceConfig, SandboxConfig
from .errors import CommandError, SandboxRefusedError
from .message import TransportUserMessage
from .plugins import Hooks, build_plugin_manager
from .protocol import Command
from .resources import SandboxResource, SandboxResources

#: rlimits a CPython child starts under (the defaults' 1 MiB stack and 15 files are enough,
#: but 196 MiB of address space is not always, with a large import path)
PYTHON_RLIMITS = {"RLIMIT_AS": 512 * 1024 * 1024}


class RecordingBroker:
    """A broker double that records ``(routing_key, body)`` for every publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, routing_key: str, body: bytes) -> None:
        self.published.append((routing_key, body))

    def messages(self, routing_key: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies published (to ``routing_key`` only, if given)."""
        return [json.loads(body) for key, body in self.published
                if routing_key is None or key == routing_key]


class RecordingResource(SandboxResource):
    """A resource that records every request and answers ``success: true``.

    It also records lines logged through it when named as ``logging_resource``.

    ``record.replies`` from :func:`python_child` lands in ``self.requests``
    like any other request; :meth:`replies` returns the list it carried.
    """

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.requests: list[Command] = []
        self.logs: list[tuple[str, int, str]] = []

    def log(self, api: SandboxApi, msg: str, level: int) -> Any:
        """Record a line logged for the app's owner (use as ``logging_resource``)."""
        from twisted.internet.defer import succeed
        self.logs.append((api.sandbox_id, level, msg))
        return succeed(None)

    def dispatch_request(self, api: SandboxApi, command: Command) -> Any:
        self.requests.append(command)
        from twisted.internet.defer import succeed
        return succeed(self.reply(command))

    def replies(self) -> list[Command]:
        """The replies the child reported with ``record.replies`` (the last report)."""
        reports = [r for r in self.requests if r["cmd"] == "replies"]
        return reports[-1]["replies"] if reports else []


_CHILD = r'''
import json, sys
requests = json.loads(sys.argv[1])
wait_for_message = sys.argv[2] == "1"
out = sys.stdout
inp = sys.stdin
if wait_for_message:
    inbound = json.loads(inp.readline())
else:
    inbound = None
ids = []
awaited = set()
for i, req in enumerate(requests):
    req.setdefault("cmd_id", "req-%d" % i)
    req.setdefault("reply", False)
    ids.append(req["cmd_id"])
    if not req.get("acknowledged"):
        awaited.add(req["cmd_id"])
    out.write(json.dumps(req) + "\n")
out.flush()
replies = {}
while not awaited.issubset(replies):
    line = inp.readline()
    if not line:
        break
    msg = json.loads(line)
    if msg.get("reply"):
        replies[msg["cmd_id"]] = msg
result = [replies.get(i) for i in ids]
out.write(json.dumps({"cmd": "record.replies", "cmd_id": "final", "reply": False,
                      "replies": result, "inbound": inbound}) + "\n")
out.flush()
inp.readline()
'''


def python_child(requests: list[dict[str, Any]], wait_for_message: bool = True) -> list[str]:
    """Arguments for ``sys.executable`` that run a child sending ``requests`` (``cmd`` plus fields).

    The child waits for the inbound message (unless ``wait_for_message`` is
    false), sends every request at once, collects the replies by ``cmd_id``
    (``req-0``, ``req-1``, ... unless given; a request marked ``acknowledged``
    is not waited for, its reply only kept if it came), sends them to the ``record``
    resource as ``record.replies`` (with the inbound command as ``inbound``),
    then waits for that reply and exits 0.
    """
    return ["-c", _CHILD, json.dumps(requests), "1" if wait_for_message else "0"]


def python_worker_config(args: list[str], sandbox: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A generic worker config that runs ``sys.executable`` with ``args`` and a ``record`` resource."""
    resources = {"record": {"cls": "vxsandbox_core.testing:RecordingResource"}}
    resources.update(sandbox or {})
    config: dict[str, Any] = {
        "executable": sys.executable,
        "args": args,
        "sandbox_id": "test-sandbox",
        "transport_name": "test_transport",
        "sandbox": resources,
        "rlimits": dict(PYTHON_RLIMITS),
        "timeout": 10,
    }
    config.update(extra)
    return config


def make_user_message(**fields: Any) -> TransportUserMessage:
    """A user message from a test transport, with sensible defaults for every field."""
    defaults: dict[str, Any] = {
        "to_addr": "*120*8864#",
        "from_addr": "+27831234567",
        "transport_name": "test_transport",
        "transport_type": "ussd",
        "content": "hello",
        "session_event": "resume",
    }
    defaults.update(fields)
    return TransportUserMessage(defaults)


def hooks_with(*plugins: Any) -> Hooks:
    """Hooks with only the given plugin objects registered (no installed plugins)."""
    pm = build_plugin_manager(load_entry_points=False)
    for plugin in plugins:
        pm.register(plugin)
    return Hooks(pm)


class FakeSandboxApi(SandboxApi):
    """A :class:`SandboxApi` with no child: records what would be sent, logged and killed.

    Use it to drive a resource as a child would in unit tests (a
    :class:`~vxsandbox_core.errors.CommandError` comes back as an error reply)::

        api = FakeSandboxApi(worker)
        reply = await api.call_resource(resource, {"cmd": "get", "cmd_id": "1", "key": "a"})
    """

    def __init__(self, worker: Any = None, sandbox_id: str = "test-sandbox",
                 config: dict[str, Any] | None = None) -> None:
        cfg = SandboxConfig(config or {})
        super().__init__(SandboxResources(worker, {}), cfg, sandbox_id, worker, hooks_with())
        self.sent: list[Command] = []
        self.logs: list[tuple[int, str]] = []
        self.killed: list[str] = []
        self.finished = False

    def sandbox_send(self, command: Command) -> bool:
        self.sent.append(command)
        return True

    def sandbox_kill(self, reason: str, explanation: str | None = None) -> None:
        self.killed.append(reason)

    def sandbox_finish(self) -> None:
        self.finished = True

    def log(self, msg: str, level: int = logging.INFO) -> Any:
        from twisted.internet.defer import succeed
        self.logs.append((level, msg))
        return succeed(None)

    def report(self, msg: str, level: int = logging.WARNING) -> None:
        self.logs.append((level, msg))


class StubOutboundConfig(ResourceConfig):
    """Options of :class:`StubOutboundResource`."""

    transport_type: str
    fields = (
        Field("transport_type", (str,), "transport_type of new messages whose endpoint's send_to options "
              "set none", "sms"),
    )


class StubOutboundResource(SandboxResource):
    """A minimal ``outbound`` resource for broker tests: ``reply_to`` and ``send_to`` as Vumi's.

    ``reply_to`` (``in_reply_to``, ``content``, ``continue_session``) publishes
    the reply to a message this run received; ``send_to`` (``to_addr``,
    ``content``, ``endpoint``) publishes a new message through an endpoint,
    with ``transport_type`` from the resource config (default ``sms``). It
    checks fewer fields than the real one, but which message a reply may
    answer (:meth:`SandboxApi.received_message`) and what a new message for
    an endpoint carries (:meth:`Sandbox.endpoint_message`) are the same
    calls the ``outbound`` resource of vxsandbox-resources-outbound makes,
    which real deployments use.
    """

    CONFIG_CLASS = StubOutboundConfig
    options: StubOutboundConfig

    async def handle_reply_to(self, api: SandboxApi, command: Command) -> Command:
        original = api.received_message(command, "in_reply_to")
        reply = original.reply(command.get("content"), bool(command.get("continue_session", True)))
        await api.worker.publish_message(reply)
        return self.reply(command)

    async def handle_send_to(self, api: SandboxApi, command: Command) -> Command:
        endpoint = command.get("endpoint") or "default"
        try:
            msg = api.worker.endpoint_message(endpoint, command.get("to_addr"), command.get("content"),
                                              default_transport_type=self.options.transport_type)
        except SandboxRefusedError as e:
            raise CommandError(f"'endpoint': {e}") from None
        await api.worker.publish_message(msg, endpoint)
        return self.reply(command)


_ECHO_CHILD = r'''
import json, sys, time
delay = float(sys.argv[1])
def send(request):
    sys.stdout.write(json.dumps(request) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    command = json.loads(line)
    if command.get("reply") or command["cmd"] not in ("inbound-message", "inbound-event"):
        continue
    if delay:
        time.sleep(delay)
    msg = command["msg"]
    if command["cmd"] == "inbound-message":
        request = {"cmd": "outbound.reply_to", "in_reply_to": msg["message_id"],
                   "content": "echo: %s" % (msg["content"],),
                   "continue_session": msg.get("session_event") != "close"}
    else:
        seen = {"event_type": msg["event_type"], "user_message_id": msg["user_message_id"],
                "event_id": msg.get("event_id"), "transport_name": msg.get("transport_name")}
        request = {"cmd": "outbound.send_to", "to_addr": "event-probe", "content": json.dumps(seen)}
    request.update(cmd_id="1", reply=False)
    send(request)
    reply = json.loads(sys.stdin.readline() or "{}")
    if not reply.get("success"):
        sys.exit(3)
    send({"cmd": "run.done", "cmd_id": "2", "reply": False})
'''


def echo_child(delay: float = 0.0) -> list[str]:
    """Arguments for ``sys.executable`` that run a fast echo app (no ``site`` import).

    For an ``inbound-message`` it sleeps ``delay`` seconds, then asks
    ``outbound.reply_to`` for ``"echo: <content>"`` (closing the session when
    the message closed it). For an ``inbound-event`` it asks
    ``outbound.send_to`` to send ``to_addr: event-probe`` a JSON summary of the
    event (``event_type``, ``user_message_id``, ``event_id``,
    ``transport_name``). When the request succeeded it sends ``run.done``
    and waits for the next message (so it also serves as a warm child);
    otherwise it exits 3.
    """
    return ["-S", "-c", _ECHO_CHILD, str(delay)]


def echo_worker_config(transport_name: str | None, delay: float = 0.0, **extra: Any) -> dict[str, Any]:
    """A generic worker config running :func:`echo_child` with :class:`StubOutboundResource` as ``outbound``."""
    return python_worker_config(
        echo_child(delay), sandbox={"outbound": {"cls": "vxsandbox_core.testing:StubOutboundResource"},
                                    "run": {"cls": "run"}},
        transport_name=transport_name, **extra)
