"""Resources and plugins used by the core tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from vxsandbox_core import SandboxResource, hookimpl
from vxsandbox_core.protocol import make_reply


class SlowResource(SandboxResource):
    """Answers ``slow.wait`` after ``delay`` seconds, and ``slow.ping`` at once."""

    async def handle_wait(self, api: Any, command: dict[str, Any]) -> dict[str, Any]:
        await deferLater(reactor, float(command.get("delay", 0.1)), lambda: None)
        return self.reply(command, waited=command.get("delay"))

    def handle_ping(self, api: Any, command: dict[str, Any]) -> dict[str, Any]:
        return self.reply(command, pong=True)

    def handle_fail(self, api: Any, command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("broken handler")


class NoteResource(SandboxResource):
    """Answers ``note`` with ``success: true`` when ``text`` is given (a child may acknowledge it), and ``ping``."""

    ACKNOWLEDGED = {"note": "text"}

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.notes: list[Any] = []

    def handle_note(self, api: Any, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("text") is None:
            return self.reply_error(command, "'text' is required")
        self.notes.append(command["text"])
        return self.reply(command)

    def handle_ping(self, api: Any, command: dict[str, Any]) -> dict[str, Any]:
        return self.reply(command, pong=True)


class RepliesPlugin:
    """Records every reply_sent as (cmd_id, success)."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, bool]] = []

    @hookimpl
    def reply_sent(self, api, command, reply):
        self.replies.append((command["cmd_id"], reply["success"]))


class OrderPlugin:
    """Records every hook call in order and answers ``record.intercept`` itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def child_started(self, api, pid):
        self.calls.append(("child_started", pid))

    @hookimpl
    def run_started(self, api):
        self.calls.append(("run_started", api.sandbox_id))

    @hookimpl
    def command_received(self, api, command):
        self.calls.append(("command_received", command["cmd"]))
        if command["cmd"] == "record.intercept":
            return make_reply(command, answered_by="plugin")
        return None

    @hookimpl
    def reply_sent(self, api, command, reply):
        self.calls.append(("reply_sent", reply["cmd"]))

    @hookimpl
    def run_ended(self, api, result):
        self.calls.append(("run_ended", result.describe()))

    @hookimpl
    def message_processed(self, sandbox_id, message, outcome, duration):
        self.calls.append(("message_processed", outcome))


class FakeEntryPoint:
    """An entry point of a fake distribution, as stevedore lists it, counting its imports."""

    def __init__(self, name: str, value: str, result: Any = None, error: Exception | None = None,
                 group: str = "") -> None:
        self.name, self.value, self.group, self.result, self.failure = name, value, group, result, error
        self.dist = type("Dist", (), {"name": f"dist-of-{name}", "version": "7.0"})()
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if self.failure is not None:
            raise self.failure
        return self.result
