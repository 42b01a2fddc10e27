"""Big messages reach the app: the runner's copies of a line and node's address space stay inside the bounds."""

from __future__ import annotations

import os
import time

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core.rlimits import MiB
from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsSandbox
from vxsandbox_js.worker import NODE_RLIMITS

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

#: Logs the size of the blob it was given.
BLOB_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info('blob ' + command.msg.transport_metadata.blob.length, function () { self.done(); });
};
"""


def blob_message(mib: int):
    return make_user_message(transport_metadata={"blob": "z" * (mib * MiB)})


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the jail's init and what it runs), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


def node_peak_kib(child_pid: int) -> int:
    """VmPeak of the node process a child runs (found by its program name)."""
    for pid in [child_pid, *descendants(child_pid)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                program = f.read().split(b"\0")[0]
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        if os.path.basename(program) == b"node":
            return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmPeak:"))
    raise AssertionError(f"no node process under {child_pid}")


class BigMessageTests(TestCase):
    timeout = 60

    async def test_message_of_two_fifths_of_the_heap_is_answered(self):
        """A 13 MiB message runs in a 32 MiB heap: the runner lets its own copy go before the app parses it."""
        worker = make_worker(JsSandbox, js_config(BLOB_APP, max_old_space_size=32))
        await worker.setup()
        self.addCleanup(worker.teardown)
        self.assertEqual(await worker.process_message(blob_message(13)), "ok")
        self.assertIn(f"blob {13 * MiB}", worker.resources.resources["log"].messages())

    async def test_20_mib_message_leaves_node_room_in_its_address_space(self):
        """After a 20 MiB message node has used at most RLIMIT_AS less one malloc arena (64 MiB)."""
        worker = make_worker(JsSandbox, js_config(BLOB_APP, messages_per_process=2))
        await worker.setup()
        self.addCleanup(worker.teardown)
        started = time.monotonic()
        self.assertEqual(await worker.process_message(blob_message(20)), "ok")
        self.assertIn(f"blob {20 * MiB}", worker.resources.resources["log"].messages())
        (child,) = worker.pool.idle
        peak = node_peak_kib(child.pid) * 1024
        self.assertLess(peak, NODE_RLIMITS["RLIMIT_AS"] - 64 * MiB,
                        f"VmPeak {peak // MiB} MiB after {time.monotonic() - started:.1f}s")
