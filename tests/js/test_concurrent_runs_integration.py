"""Several messages of one tenant at once in one warm Node.js child (``runs_per_child``), each in its own context."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsSandbox

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

# Keeps its message's content in a global, then makes two round trips to the worker with a timer
# between them, so the runs of the messages sent together interleave; the reply says what the
# global held at the end and which process ran it. The app also names a run of its own choosing
# (run_id 999) in its request: the runner must send its own run's number, or the worker would
# ignore the request and the run would time out.
INTERLEAVING_APP = """
api.on_inbound_message = function (command) {
    var msg = command.msg;
    marker = msg.content;
    api.request('config.get', {key: 'greeting', run_id: 999}, function (reply) {
        setTimeout(function () {
            api.request('outbound.reply_to', {
                in_reply_to: msg.message_id,
                content: reply.value + ' ' + marker + ' ' + pid,
            }, function (sent) {
                if (sent.success) { api.done(); }
            });
        }, 30);
    });
};
"""

# Throws from a timer of the message "crash" (the runner knows whose it was), or leaves a rejected
# promise unhandled for "reject" (it does not): the process ends, and with it every run.
CRASHING_APP = """
api.on_inbound_message = function (command) {
    var content = command.msg.content;
    setTimeout(function () {
        if (content === 'crash') { throw new Error('boom'); }
        if (content === 'reject') { Promise.reject(new Error('boom')); return; }
        api.done();
    }, content === 'wait' ? 5000 : 50);
};
"""


class ConcurrentJsRunTests(TestCase):
    def worker(self, javascript: str, **extra):
        # The child's pid tells children apart only outside a PID namespace, so no jail here.
        config = js_config(javascript, sandbox={"outbound": {"cls": "outbound"},
                                                "config": {"cls": "config", "values": {"greeting": "hello"}}},
                           app_context="{pid: process.pid}", isolation="none", messages_per_process=100,
                           **extra)
        worker = make_worker(JsSandbox, config)
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        return worker

    async def test_messages_at_once_share_a_child_and_keep_their_own_globals_and_replies(self):
        """Six messages at once in one child: each reply answers its own message with its own global."""
        worker = self.worker(INTERLEAVING_APP, runs_per_child=6)
        await worker.setup()
        messages = [make_user_message(content=f"m{i}") for i in range(6)]
        outcomes = await gatherResults([Deferred.fromCoroutine(worker.process_message(m)) for m in messages])
        self.assertEqual(outcomes, ["ok"] * 6)
        self.assertEqual(worker.pool.spawned, 1)
        replies = {m["in_reply_to"]: m["content"].split() for m in worker.broker.messages()}
        self.assertEqual({k: v[:2] for k, v in replies.items()},
                         {m["message_id"]: ["hello", m["content"]] for m in messages})
        self.assertEqual(len({v[2] for v in replies.values()}), 1, replies)

    async def test_a_crash_in_one_run_ends_the_runs_beside_it(self):
        """An uncaught exception in one run's timer ends the process: that run fails, and the run beside it, which
        the runner's report shows did nothing wrong, is interrupted (its message is delivered again)."""
        worker = self.worker(CRASHING_APP, runs_per_child=2, timeout=3)
        await worker.setup()
        outcomes = await gatherResults([Deferred.fromCoroutine(worker.process_message(make_user_message(content=c)))
                                        for c in ("wait", "crash")])
        self.assertEqual(outcomes, ["interrupted", "error"])
        logged = worker.resources.resources["log"].messages()
        self.assertTrue(any("uncaught exception in app" in m and "boom" in m for m in logged), logged)
        self.assertEqual(worker.pool.spawned, 1)
        self.assertEqual(worker.pool.live, 0)

    async def test_a_crash_no_run_can_be_blamed_for_fails_every_run(self):
        """An unhandled rejection belongs to no run the runner can name: every run of the child fails."""
        worker = self.worker(CRASHING_APP, runs_per_child=2, timeout=3)
        await worker.setup()
        outcomes = await gatherResults([Deferred.fromCoroutine(worker.process_message(make_user_message(content=c)))
                                        for c in ("wait", "reject")])
        self.assertEqual(outcomes, ["error", "error"])
        self.assertEqual(worker.pool.spawned, 1)
