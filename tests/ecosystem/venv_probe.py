"""Run one message through the generic worker with a real Python child, inside a venv under test.

Usage: python venv_probe.py '{"sandbox": {...resources...}, "requests": [...]}'
Prints the replies the child received, as one JSON line. Imports only what
the installed distributions provide, so it fails if an install is incomplete.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from vxsandbox_core import Sandbox
from vxsandbox_core.testing import (
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)


async def probe(spec: dict[str, Any]) -> None:
    config = python_worker_config(python_child(spec["requests"]), sandbox=spec["sandbox"])
    worker = Sandbox(config, broker=RecordingBroker(), hooks=hooks_with())
    await worker.setup()
    outcome = await worker.process_message(make_user_message())
    await worker.teardown()
    if outcome != "ok":
        raise SystemExit(f"sandbox run outcome: {outcome}")
    print(json.dumps(worker.resources.resources["record"].replies()))


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(probe(json.loads(sys.argv[1]))))
