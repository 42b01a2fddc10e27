"""Tests for warm, pre-started and bounded children: reuse, isolation between tenants, retirement, limits."""

from __future__ import annotations

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, hookimpl
from vxsandbox_core.testing import hooks_with, make_user_message, python_worker_config

# A child that serves messages until stdin closes; what it does depends on the message content.
WARM_CHILD = r"""
import json, os, sys, time
# Which process served a message: the pid alone repeats across children in PID namespaces (bwrap).
PROCESS = "%d-%s" % (os.getpid(), os.urandom(8).hex())
seen = 0
def send(cmd):
    sys.stdout.write(json.dumps(cmd) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd.get("reply") or cmd["cmd"] not in ("inbound-message", "inbound-event"):
        continue
    seen += 1
    content = cmd["msg"].get("content")
    send({"cmd": "record.seen", "pid": PROCESS, "seen": seen, "content": content, "at": time.time()})
    if content == "hang":
        while True:
            pass
    if content == "crash":
        sys.exit(3)
    if content == "slow":
        time.sleep(0.3)
    if content == "pending":
        send({"cmd": "slow.wait", "delay": 0.3})
    if content.startswith("burst"):
        for i in range(int(content[5:])):
            send({"cmd": "slow.wait", "cmd_id": "b%d" % i, "delay": 0.2})
        time.sleep(0.5)
    send({"cmd": "run.done"})
    if content == "chatty":
        time.sleep(0.1)
        send({"cmd": "record.late"})
"""


class Ended:
    """Collects run_ended results, the most children ever alive and the order of the life hooks."""

    def __init__(self) -> None:
        self.hooks = []
        self.results = []
        self.max_live = 0
        self.worker = None
        self.children = []

    @hookimpl
    def child_started(self, api, pid):
        self.hooks.append("child_started")
        self.max_live = max(self.max_live, self.worker.pool.live)
        self.children.append(api.child)

    @hookimpl
    def run_started(self, api):
        self.hooks.append("run_started")

    @hookimpl
    def run_ended(self, api, result):
        self.hooks.append("run_ended")
        self.results.append(result)


class PoolTests(TestCase):
    def make_worker(self, **extra) -> tuple[Sandbox, Ended]:
        extra.setdefault("messages_per_process", 100)
        sandbox = {"run": {"cls": "run"}, "slow": {"cls": "tests.core.helpers:SlowResource"}}
        plugin = Ended()
        worker = Sandbox(python_worker_config(["-c", WARM_CHILD], sandbox=sandbox, **extra),
                         hooks=hooks_with(plugin))
        plugin.worker = worker
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        return worker, plugin

    def send(self, worker: Sandbox, content: str, sandbox_id: str = "a") -> Deferred[str]:
        return Deferred.fromCoroutine(
            worker.process_message(make_user_message(content=content, sandbox_id=sandbox_id)))

    def seen(self, worker: Sandbox) -> list[dict]:
        return [r for r in worker.resources.resources["record"].requests if r["cmd"] == "seen"]

    async def test_warm_child_serves_several_messages(self):
        """Messages of one tenant reuse one warm child, which keeps running between them."""
        worker, _ = self.make_worker()
        await worker.setup()
        for _ in range(3):
            self.assertEqual(await self.send(worker, "hi"), "ok")
        seen = self.seen(worker)
        self.assertEqual(len({s["pid"] for s in seen}), 1)
        self.assertEqual([s["seen"] for s in seen], [1, 2, 3])
        self.assertEqual((worker.pool.spawned, worker.pool.reused), (1, 2))

    async def test_child_hooks_fire_per_child_and_run_hooks_per_run(self):
        """A warm child fires child_started once; each of its runs fires run_started and then run_ended."""
        worker, plugin = self.make_worker()
        await worker.setup()
        for _ in range(3):
            self.assertEqual(await self.send(worker, "hi"), "ok")
        self.assertEqual(plugin.hooks, ["child_started"] + ["run_started", "run_ended"] * 3)

    async def test_messages_per_process_retires_the_child(self):
        """After messages_per_process runs the child is replaced."""
        worker, _ = self.make_worker(messages_per_process=2)
        await worker.setup()
        for _ in range(3):
            await self.send(worker, "hi")
        pids = [s["pid"] for s in self.seen(worker)]
        self.assertEqual(pids[0], pids[1])
        self.assertNotEqual(pids[1], pids[2])

    async def test_tenants_never_share_a_child(self):
        """Two sandbox_ids, interleaved, always get separate children."""
        worker, _ = self.make_worker()
        await worker.setup()
        for sandbox_id in ("a", "b", "a", "b"):
            await self.send(worker, sandbox_id, sandbox_id=sandbox_id)
        by_tenant = {}
        for s in self.seen(worker):
            by_tenant.setdefault(s["content"], set()).add(s["pid"])
        self.assertEqual(len(by_tenant["a"]), 1)
        self.assertEqual(len(by_tenant["b"]), 1)
        self.assertNotEqual(by_tenant["a"], by_tenant["b"])

    async def test_timeout_crash_and_pending_requests_retire_the_child(self):
        """A run that timed out, crashed or left requests pending never lends its child to the next."""
        worker, plugin = self.make_worker(timeout=1)
        await worker.setup()
        outcomes = []
        for content in ("hi", "hang", "hi", "crash", "hi", "pending", "hi"):
            outcomes.append(await self.send(worker, content))
        self.assertEqual(outcomes, ["ok", "error", "ok", "error", "ok", "ok", "ok"])
        pids = [s["pid"] for s in self.seen(worker)]
        self.assertEqual(pids[0], pids[1])          # hi, hang: same child
        self.assertNotEqual(pids[1], pids[2])       # the hung child was killed
        self.assertNotEqual(pids[3], pids[4])       # the crashed child is gone
        self.assertEqual(pids[4], pids[5])
        self.assertNotEqual(pids[5], pids[6])       # done with a request pending: retired
        reasons = [r.kill_reason for r in plugin.results]
        self.assertEqual(reasons[1], "timeout")
        self.assertEqual([r.retired for r in plugin.results], [False, True, False, True, False, True, False])

    async def test_output_between_runs_retires_the_child(self):
        """A child that writes after its run ended is retired and its late request goes nowhere."""
        worker, _ = self.make_worker()
        await worker.setup()
        await self.send(worker, "chatty")
        await deferLater(reactor, 0.4, lambda: None)
        await self.send(worker, "hi")
        pids = [s["pid"] for s in self.seen(worker)]
        self.assertNotEqual(pids[0], pids[1])
        self.assertNotIn("late", [r["cmd"] for r in worker.resources.resources["record"].requests])

    async def test_idle_children_are_reaped(self):
        """A warm child idle longer than idle_timeout is ended."""
        worker, _ = self.make_worker(idle_timeout=0.2)
        await worker.setup()
        await self.send(worker, "hi")
        [child] = list(worker.pool.idle)
        await deferLater(reactor, 0.5, lambda: None)
        await child.wait_ended()
        self.assertEqual(worker.pool.live, 0)

    async def test_the_child_released_last_serves_next_so_extras_are_reaped(self):
        """After a burst left three warm children, one message at a time keeps to one of them.

        Taking the least recently used child would pass each message to the next
        child in turn: every one would stay in use and never be reaped, and each
        message would find a process whose caches the others had long evicted.
        """
        worker, _ = self.make_worker(idle_timeout=0.4)
        await worker.setup()
        self.assertEqual(await gatherResults([self.send(worker, "slow") for _ in range(3)]), ["ok"] * 3)
        self.assertEqual(worker.pool.live, 3)
        before = len(self.seen(worker))
        for _ in range(8):
            self.assertEqual(await self.send(worker, "hi"), "ok")
            await deferLater(reactor, 0.1, lambda: None)
        served = {s["pid"] for s in self.seen(worker)[before:]}
        self.assertEqual(len(served), 1)
        self.assertEqual(worker.pool.live, 1)

    async def test_live_children_are_bounded(self):
        """With max_children 2, six tenants at once never have more than two children alive."""
        worker, plugin = self.make_worker(max_children=2)
        await worker.setup()
        outcomes = await gatherResults([
            self.send(worker, "slow", sandbox_id=f"t{i}") for i in range(6)])
        self.assertEqual(outcomes, ["ok"] * 6)
        self.assertLessEqual(plugin.max_live, 2)
        self.assertEqual(worker.pool.spawned, 6)

    async def test_prefork_starts_the_next_child_ahead(self):
        """With prefork 1 a spare is running before the first message, which then uses it."""
        worker, plugin = self.make_worker(messages_per_process=1, prefork=1)
        await worker.setup()
        [spare] = worker.pool.spares
        await deferLater(reactor, 0.2, lambda: None)
        await self.send(worker, "hi")
        self.assertEqual(plugin.children, [spare])
        self.assertEqual(len(worker.pool.spares), 1)
        self.assertNotEqual(worker.pool.spares[0], spare)

    async def test_a_spare_taken_while_others_wait_is_replaced_when_its_run_ends(self):
        """Its replacement would start beside the run it serves and compete with it for the CPU."""
        worker, plugin = self.make_worker(messages_per_process=1, prefork=2)
        await worker.setup()
        await deferLater(reactor, 0.2, lambda: None)
        run = self.send(worker, "slow")
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((len(worker.pool.spares), worker.pool.spawned), (1, 2))
        self.assertEqual(await run, "ok")
        self.assertEqual((len(worker.pool.spares), worker.pool.spawned), (2, 3))

    async def test_the_last_spare_taken_is_replaced_at_once(self):
        """With no spare left waiting, the next message would start cold: replacements start right away."""
        worker, plugin = self.make_worker(messages_per_process=1, prefork=2)
        await worker.setup()
        await deferLater(reactor, 0.2, lambda: None)
        runs = [self.send(worker, "slow", sandbox_id=f"t{i}") for i in range(2)]
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((len(worker.pool.spares), worker.pool.spawned), (2, 4))
        self.assertEqual(await gatherResults(runs), ["ok", "ok"])

    async def test_ordered_runs_one_tenant_at_a_time(self):
        """With ordered true, a tenant's second message starts only after the first ended."""
        worker, _ = self.make_worker(ordered=True)
        await worker.setup()
        await gatherResults([self.send(worker, "slow"), self.send(worker, "hi")])
        first, second = self.seen(worker)
        self.assertEqual((first["content"], second["content"]), ("slow", "hi"))
        self.assertGreaterEqual(second["at"] - first["at"], 0.3)

    async def test_unordered_runs_overlap(self):
        """Without ordering, a tenant's messages run side by side in separate children."""
        worker, _ = self.make_worker()
        await worker.setup()
        await gatherResults([self.send(worker, "slow"), self.send(worker, "hi")])
        first, second = sorted(self.seen(worker), key=lambda s: s["at"])
        self.assertLess(second["at"] - first["at"], 0.3)
        self.assertNotEqual(first["pid"], second["pid"])

    async def test_pending_request_cap(self):
        """Requests beyond max_pending_requests get an error reply naming the limit."""
        worker, _ = self.make_worker(max_pending_requests=2, logging_resource="record")
        await worker.setup()
        self.assertEqual(await self.send(worker, "burst5"), "ok")
        record = worker.resources.resources["record"]
        self.assertEqual(len([r for r in record.requests if r["cmd"] == "seen"]), 1)

    async def test_request_cap_kills_the_child(self):
        """A run making more than max_requests_per_run requests is killed with that reason."""
        worker, plugin = self.make_worker(max_requests_per_run=3, logging_resource="record")
        await worker.setup()
        self.assertEqual(await self.send(worker, "burst5"), "error")
        self.assertEqual(plugin.results[0].kill_reason, "too many requests")
        logs = [m for _, _, m in worker.resources.resources["record"].logs]
        self.assertTrue(any("max_requests_per_run (3)" in m for m in logs), logs)

    async def test_child_killed_from_outside_while_idle_is_forgotten(self):
        """An idle warm child SIGKILLed from outside leaves the pool; the next message gets a new one."""
        worker, _ = self.make_worker()
        await worker.setup()
        await self.send(worker, "hi")
        [child] = list(worker.pool.idle)
        os.kill(child.pid, signal.SIGKILL)
        await child.wait_ended()
        self.assertEqual(worker.pool.live, 0)
        self.assertEqual(await self.send(worker, "hi"), "ok")

    async def test_kill_all_ends_busy_children(self):
        """kill_all ends a run in progress as interrupted (its message is to be delivered again)."""
        worker, plugin = self.make_worker(timeout=30)
        await worker.setup()
        d = self.send(worker, "hang")
        await deferLater(reactor, 0.3, lambda: None)
        worker.kill_all()
        self.assertEqual(await d, "interrupted")
        self.assertEqual(plugin.results[0].kill_reason, "worker stopping")
