"""Resources and builders shared by the JavaScript sandbox tests."""

from __future__ import annotations

import logging
import os
from typing import Any

from twisted.internet.defer import Deferred, succeed

from vxsandbox_core.testing import RecordingBroker, hooks_with
from vxsandbox_resources_log import LoggingResource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")

#: The seed's example app: logs from its handler and reports whether the log request succeeded.
SEED_APP = """
api.on_inbound_message = function(command) {
    this.log_info("From command: inbound-message", function (reply) {
        this.log_info("Log successful: " + reply.success);
        this.done();
    });
};
"""


class RecordingLog(LoggingResource):
    """A ``log`` resource that also keeps every line, per sandbox_id, for assertions."""

    lines: list[tuple[str, int, str]]

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.lines = []

    def log(self, api: Any, msg: str, level: int) -> Deferred[None]:
        self.lines.append((api.sandbox_id, level, msg))
        return succeed(None)

    def messages(self, min_level: int = logging.DEBUG) -> list[str]:
        """The logged texts at ``min_level`` or above."""
        return [msg for _, level, msg in self.lines if level >= min_level]


class SlowRecordingLog(RecordingLog):
    """A :class:`RecordingLog` whose lines are written 50 ms later, as a log stored in a database is."""

    def log(self, api: Any, msg: str, level: int) -> Deferred[None]:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        return deferLater(reactor, 0.05, super().log, api, msg, level)


def js_config(javascript: str | None = None, sandbox: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A ``js`` worker config with a recording log resource and a short timeout."""
    resources: dict[str, Any] = {"log": {"cls": "tests.js.helpers:RecordingLog"}}
    resources.update(sandbox or {})
    config: dict[str, Any] = {"sandbox_id": "tenant-1", "transport_name": "test_transport",
                              "sandbox": resources, "timeout": 10}
    if javascript is not None:
        config["javascript"] = javascript
    config.update(extra)
    return config


def make_worker(cls: type, config: dict[str, Any], broker: Any = None) -> Any:
    """Build a worker with no installed plugins and a recording broker."""
    return cls(config, broker=broker if broker is not None else RecordingBroker(), hooks=hooks_with())


async def started(case: Any, worker: Any) -> Any:
    """Set ``worker`` up, to be torn down when the test ``case`` ends (with its children and snapshot builds)."""
    case.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
    await worker.setup()
    return worker
