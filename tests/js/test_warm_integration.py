"""Tests for warm Node.js children: one child per tenant and code version, a fresh vm context per message."""

from __future__ import annotations

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core import hookimpl
from vxsandbox_core.builtins.config import ConfigResource
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message
from vxsandbox_js import JsFileSandbox, JsSandbox

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

# Counts messages in a global (fresh per message, so always 1) and reports the process id.
COUNTING_APP = """
if (typeof seen === 'undefined') { seen = 0; }
api.on_inbound_message = function (command) {
    seen += 1;
    var content = command.msg.content;
    if (content === 'timer') {
        setTimeout(function () { api.log_info('late timer fired'); }, 200);
    }
    this.log_info('pid ' + pid + ' seen ' + seen + ' content ' + content, function () { this.done(); });
};
"""


class WarmJsTests(TestCase):
    def worker(self, cls=JsSandbox, **extra):
        extra.setdefault("javascript", COUNTING_APP)
        # The child's own pid tells children apart only outside a PID namespace, so no jail here.
        extra.setdefault("isolation", "none")
        config = js_config(app_context="{pid: process.pid}", messages_per_process=50, **extra)
        worker = make_worker(cls, config)
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        return worker

    async def send(self, worker, content, sandbox_id="tenant-1"):
        return await worker.process_message(make_user_message(content=content, sandbox_id=sandbox_id))

    def lines(self, worker):
        return [m for m in worker.resources.resources["log"].messages() if m.startswith("pid ")]

    async def test_globals_do_not_survive_between_messages_in_one_child(self):
        """Three messages run in one node process, and each sees a fresh global scope."""
        worker = self.worker()
        await worker.setup()
        for content in ("a", "b", "c"):
            self.assertEqual(await self.send(worker, content), "ok")
        lines = self.lines(worker)
        self.assertEqual(len({line.split()[1] for line in lines}), 1, lines)
        self.assertEqual([line.split()[3] for line in lines], ["1", "1", "1"])
        self.assertEqual(worker.pool.spawned, 1)

    async def test_a_log_written_later_keeps_the_child_warm(self):
        """done's "Done." line is still being written when js.done arrives: the run waits for it, the child stays."""
        worker = self.worker(sandbox={"log": {"cls": "tests.js.helpers:SlowRecordingLog"}})
        await worker.setup()
        for content in ("a", "b", "c"):
            self.assertEqual(await self.send(worker, content), "ok")
        self.assertEqual(worker.resources.resources["log"].messages().count("Done."), 3)
        self.assertEqual([line.split()[3] for line in self.lines(worker)], ["1", "1", "1"])
        self.assertEqual(worker.pool.spawned, 1)

    async def test_timers_of_a_finished_message_never_fire(self):
        """A timer left by one message is cleared at done and never reaches the next message."""
        worker = self.worker()
        await worker.setup()
        await self.send(worker, "timer")
        await deferLater(reactor, 0.4, lambda: None)
        await self.send(worker, "after")
        messages = worker.resources.resources["log"].messages()
        self.assertNotIn("late timer fired", messages)
        self.assertEqual(worker.pool.spawned, 1)

    async def test_each_tenant_gets_its_own_child(self):
        """Two sandbox_ids never share a node process."""
        worker = self.worker()
        await worker.setup()
        for sandbox_id in ("t1", "t2", "t1"):
            await self.send(worker, sandbox_id, sandbox_id=sandbox_id)
        pids = [line.split()[1] for line in self.lines(worker)]
        self.assertEqual(pids[0], pids[2])
        self.assertNotEqual(pids[0], pids[1])

    async def test_edited_app_file_gets_a_new_child(self):
        """When the app's file changes, the next message runs in a child that loaded the new code."""
        app = self.mktemp() + ".js"
        with open(app, "w") as f:
            f.write(COUNTING_APP)
        worker = self.worker(cls=JsFileSandbox, javascript=None, javascript_file=app)
        await worker.setup()
        await self.send(worker, "v1")
        with open(app, "w") as f:
            f.write(COUNTING_APP + "\n// version 2\n")
        await self.send(worker, "v2")
        pids = [line.split()[1] for line in self.lines(worker)]
        self.assertNotEqual(pids[0], pids[1])
        self.assertEqual(worker.pool.spawned, 2)

    async def test_a_throwing_app_retires_its_child(self):
        """An app that throws ends its run with an error and the next message gets a new child."""
        worker = self.worker(javascript=COUNTING_APP.replace(
            "seen += 1;", "seen += 1; if (command.msg.content === 'boom') { throw new Error('boom'); }"))
        await worker.setup()
        outcomes = [await self.send(worker, c) for c in ("a", "boom", "b")]
        self.assertEqual(outcomes, ["ok", "error", "ok"])
        pids = [line.split()[1] for line in self.lines(worker)]
        self.assertNotEqual(pids[0], pids[1])


#: Awaits four log lines one after the other, as vumigo_v02 does, then replies and ends the run.
AWAITING_APP = """
api.on_inbound_message = function (command) {
    var self = this, n = 0;
    function next(reply) {
        if (n === 4) {
            self.request('outbound.reply_to', {in_reply_to: command.msg.message_id, content: 'ok ' + reply.success},
                         function () { self.done(); });
            return;
        }
        n += 1;
        self.log_info('step ' + n, next);
    }
    next({success: true});
};
"""


class SentRecorder:
    """Wraps each child's ``send`` to keep every command the worker writes to it."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    @hookimpl
    def child_started(self, api, pid):
        child = api.child
        original = child.send

        def send(command, run=None):
            self.sent.append(command)
            return original(command, run)

        child.send = send


class AcknowledgedLogTests(TestCase):
    async def test_awaited_log_lines_cost_no_reply(self):
        """The runner answers the app's log lines itself: they are all logged, in order, and no reply is written."""
        recorder = SentRecorder()
        worker = JsSandbox(js_config(AWAITING_APP, sandbox={"outbound": {"cls": "outbound"}}, messages_per_process=50),
                           broker=RecordingBroker(), hooks=hooks_with(recorder))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        await worker.setup()
        for content in ("a", "b"):
            self.assertEqual(await worker.process_message(make_user_message(content=content)), "ok")
        lines = worker.resources.resources["log"].messages()
        self.assertEqual([m for m in lines if m.startswith("step")], ["step 1", "step 2", "step 3", "step 4"] * 2)
        self.assertEqual(lines.count("Done."), 2)
        replies = [c for c in recorder.sent if c.get("reply") is True]
        self.assertEqual([c["cmd"] for c in replies], ["outbound.reply_to"] * 2)
        self.assertEqual([c["cmd"] for c in recorder.sent if c.get("reply") is not True],
                         ["initialize", "inbound-message", "inbound-message"])
        self.assertEqual(recorder.sent[0]["acknowledged"],
                         {f"log.{level}": "msg" for level in ("debug", "info", "warning", "error", "critical")})
        self.assertEqual(worker.pool.spawned, 1)


#: Logs the value config.get gives for `config` and for the message's content as a key, then ends the run.
CONFIG_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.request('config.get', {key: 'config'}, function (first) {
        self.request('config.get', {key: command.msg.content}, function (second) {
            self.log_info('got ' + first.value + ' ' + second.value, function () { self.done(); });
        });
    });
};
"""


class CountingConfig(ConfigResource):
    """The config resource, counting the gets it is asked (by sandbox_id and key)."""

    def __init__(self, name, worker, config):
        super().__init__(name, worker, config)
        self.asked = []

    def handle_get(self, api, command):
        self.asked.append((api.sandbox_id, command.get("key")))
        return super().handle_get(api, command)


class TenantConfig(CountingConfig):
    """A config resource whose values differ per tenant (a third party's), fixed for the worker's life."""

    def handle_get(self, api, command):
        self.asked.append((api.sandbox_id, command.get("key")))
        return self.reply(command, value=f"{api.sandbox_id}/{command.get('key')}")


class FixedReplyTests(TestCase):
    def worker(self, cls):
        config = js_config(CONFIG_APP, sandbox={"config": {"cls": f"tests.js.test_warm_integration:{cls}",
                                                           "values": {"config": "C", "a": "A"}}},
                           messages_per_process=50)
        recorder = SentRecorder()
        worker = JsSandbox(config, broker=RecordingBroker(), hooks=hooks_with(recorder))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        return worker, recorder

    async def test_a_warm_child_asks_for_each_config_key_once(self):
        """Four messages in one child: the config resource is asked for each key once; every run gets the values."""
        worker, recorder = self.worker("CountingConfig")
        await worker.setup()
        for content in ("a", "a", "b", "a"):
            self.assertEqual(await worker.process_message(make_user_message(content=content)), "ok")
        got = [m for m in worker.resources.resources["log"].messages() if m.startswith("got ")]
        self.assertEqual(got, ["got C A", "got C A", "got C null", "got C A"])
        config = worker.resources.resources["config"]
        self.assertEqual(config.asked, [("tenant-1", "config"), ("tenant-1", "a"), ("tenant-1", "b")])
        self.assertEqual(recorder.sent[0]["fixed"], {"config.get": "key"})
        self.assertEqual(worker.pool.spawned, 1)

    async def test_a_kept_reply_never_reaches_another_tenant(self):
        """Replies that differ per tenant: each tenant's child keeps its own; none is given to the other tenant."""
        worker, _ = self.worker("TenantConfig")
        await worker.setup()
        for sandbox_id in ("t1", "t2", "t1", "t2"):
            msg = make_user_message(content="a", sandbox_id=sandbox_id)
            self.assertEqual(await worker.process_message(msg), "ok")
        got = [(sid, m) for sid, _, m in worker.resources.resources["log"].lines if m.startswith("got ")]
        self.assertEqual(got, [(sid, f"got {sid}/config {sid}/a") for sid in ("t1", "t2", "t1", "t2")])
        config = worker.resources.resources["config"]
        self.assertEqual(config.asked, [("t1", "config"), ("t1", "a"), ("t2", "config"), ("t2", "a")])
        self.assertEqual(worker.pool.spawned, 2)
