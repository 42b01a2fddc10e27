"""Tests for per-run dispatch through a real child: replies, concurrency, unknown names, failures."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox
from vxsandbox_core.resources import SandboxResources
from vxsandbox_core.testing import FakeSandboxApi, hooks_with, make_user_message, python_child, python_worker_config

from .bodies import json_values
from .helpers import RepliesPlugin

SLOW = {"slow": {"cls": "tests.core.helpers:SlowResource"}}
NOTES = {"notes": {"cls": "tests.core.helpers:NoteResource"}, **SLOW}


class DispatchTests(TestCase):
    async def run_requests(self, requests, plugins=(), **extra):
        sandbox = dict(SLOW)
        sandbox["log"] = {"cls": "vxsandbox_core.testing:RecordingResource"}
        worker = Sandbox(python_worker_config(python_child(requests), sandbox=sandbox,
                                              logging_resource="record", **extra),
                         hooks=hooks_with(*plugins))
        await worker.setup()
        outcome = await worker.process_message(make_user_message(content="héllo ☃"))
        return worker, outcome, worker.resources.resources["record"]

    async def test_log_info_gets_success_reply_with_its_cmd_id(self):
        """A child asking log.info gets a success reply carrying its own cmd_id and full cmd."""
        worker, outcome, record = await self.run_requests([{"cmd": "log.info", "cmd_id": "abc", "msg": "hi"}])
        self.assertEqual(outcome, "ok")
        self.assertEqual(record.replies(), [{"cmd": "log.info", "cmd_id": "abc", "reply": True, "success": True}])
        self.assertEqual(worker.resources.resources["log"].requests[0]["msg"], "hi")

    async def test_child_receives_the_inbound_message_intact(self):
        """The inbound-message command reaches the child with non-ASCII content intact."""
        worker, outcome, record = await self.run_requests([])
        inbound = record.requests[-1]["inbound"]
        self.assertEqual(inbound["cmd"], "inbound-message")
        self.assertEqual(inbound["msg"]["content"], "héllo ☃")

    async def test_concurrent_requests_get_their_own_replies(self):
        """Two requests in flight at once each get the reply that belongs to them."""
        worker, outcome, record = await self.run_requests([
            {"cmd": "slow.wait", "delay": 0.3}, {"cmd": "slow.wait", "delay": 0.01}])
        replies = record.replies()
        self.assertEqual([(r["cmd_id"], r["waited"]) for r in replies], [("req-0", 0.3), ("req-1", 0.01)])

    async def test_reply_to_exited_child_is_dropped_quietly(self):
        """A reply ready after the child exited is dropped and the run still ends ok."""
        code = ("import sys; sys.stdin.readline(); "
                "sys.stdout.write('{\"cmd\": \"slow.wait\", \"cmd_id\": \"late\", \"delay\": 0.3}\\n')")
        sandbox = dict(SLOW)
        worker = Sandbox(python_worker_config(["-c", code], sandbox=sandbox), hooks=hooks_with())
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "ok")

    async def test_unknown_resource_kills_the_child_and_is_reported(self):
        """A request for a resource that is not configured kills the child and says why."""
        worker, outcome, record = await self.run_requests([{"cmd": "nosuch.thing"}])
        self.assertEqual(outcome, "error")
        self.assertEqual(record.replies(), [])
        self.assertTrue(any("nosuch" in m for _, _, m in record.logs), record.logs)

    async def test_unknown_command_kills_the_child_and_is_reported(self):
        """A command a resource does not have kills the child and names the command."""
        worker, outcome, record = await self.run_requests([{"cmd": "slow.nope"}])
        self.assertEqual(outcome, "error")
        self.assertTrue(any("'nope'" in m for _, _, m in record.logs), record.logs)

    async def test_command_without_resource_kills_the_child(self):
        """A bare command with no resource prefix is an unknown resource too."""
        worker, outcome, record = await self.run_requests([{"cmd": "hello"}])
        self.assertEqual(outcome, "error")

    async def test_failing_handler_gives_error_reply_and_report(self):
        """A handler that raises answers success false with the reason, the owner is told and the operator's
        log has the traceback."""
        with self.assertLogs("vxsandbox.sandbox", logging.ERROR) as logs:
            worker, outcome, record = await self.run_requests([{"cmd": "slow.fail"}, {"cmd": "slow.ping"}])
        self.assertIn("resource 'slow' failed on 'slow.fail'", logs.output[0])
        self.assertIn('raise ValueError("broken handler")', logs.output[0])
        fail, ping = record.replies()
        self.assertFalse(fail["success"])
        self.assertIn("broken handler", fail["reason"])
        self.assertTrue(ping["success"])
        self.assertTrue(any("broken handler" in m for _, _, m in record.logs))
        self.assertEqual(outcome, "ok")


class AcknowledgedTests(TestCase):
    """Requests the child answered itself (``acknowledged: true``) for commands their resource lists."""

    async def run_requests(self, requests):
        plugin = RepliesPlugin()
        worker = Sandbox(python_worker_config(python_child(requests), sandbox=dict(NOTES),
                                              logging_resource="record"), hooks=hooks_with(plugin))
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        return worker, outcome, plugin

    def test_resources_list_what_may_be_acknowledged_under_their_own_names(self):
        """``acknowledged`` maps each listed command, under the name the config mounts its resource at, to its field."""
        worker = Sandbox(python_worker_config([], sandbox=dict(NOTES)))
        self.assertEqual(worker.resources.acknowledged, {"notes.note": "text"})

    def test_resources_list_replies_a_child_may_keep_under_their_own_names(self):
        """``fixed`` maps each command whose replies stay the same, under its resource's mounted name, to its field."""
        worker = Sandbox(python_worker_config([], sandbox={**NOTES, "settings": {"cls": "config"}}))
        self.assertEqual(worker.resources.fixed, {"settings.get": "key"})

    async def test_an_acknowledged_request_that_succeeds_gets_no_reply(self):
        """The resource handles it and the reply_sent hook sees its success, but no reply line reaches the child."""
        worker, outcome, plugin = await self.run_requests([
            {"cmd": "notes.note", "text": "one", "acknowledged": True},
            {"cmd": "slow.wait", "delay": 0.2}])
        record = worker.resources.resources["record"]
        self.assertEqual(outcome, "ok")
        self.assertEqual(worker.resources.resources["notes"].notes, ["one"])
        self.assertEqual(record.replies()[0], None)
        self.assertEqual(record.replies()[1]["waited"], 0.2)
        self.assertIn(("req-0", True), plugin.replies)

    async def test_an_acknowledged_request_that_fails_still_gets_its_reply(self):
        """A child that acknowledged a request its resource refuses hears of the refusal, and so does the operator."""
        with self.assertLogs("vxsandbox.sandbox", "WARNING") as logs:
            worker, outcome, plugin = await self.run_requests([
                {"cmd": "notes.note", "acknowledged": True}, {"cmd": "slow.wait", "delay": 0.2}])
        reply = worker.resources.resources["record"].replies()[0]
        self.assertEqual((reply["success"], reply["reason"]), (False, "'text' is required"))
        self.assertIn("[test-sandbox] the child acknowledged 'notes.note' itself but it failed: 'text' is required",
                      logs.output[0])

    async def test_acknowledged_on_a_command_not_listed_is_ignored(self):
        """Only the resource decides what may go unanswered: a child marking any other request still gets its reply."""
        worker, outcome, plugin = await self.run_requests([
            {"cmd": "notes.ping", "acknowledged": True}, {"cmd": "slow.wait", "delay": 0.2}])
        self.assertEqual(worker.resources.resources["record"].replies()[0]["pong"], True)




@settings(max_examples=400, deadline=None)
@given(cmd=st.sampled_from(["more.note", "more.ping", "notes.note", "notes.ping", "notes.nothing",
                            "nosuch.thing"]) | st.text(min_size=1, max_size=12),
       fields=st.dictionaries(st.sampled_from(["msg", "text", "level", "key"]) | st.text(max_size=4),
                              json_values, max_size=4),
       acknowledged=st.one_of(st.just(True), json_values))
def test_any_request_gets_one_reply_unless_it_was_acknowledged_and_succeeded(cmd, fields, acknowledged):
    """Whatever a child marks, a request gets the reply it would get unmarked, exactly once, except a successful
    one the child acknowledged for a command its resource lists; one for an unknown resource or command kills."""
    def dispatch(command):
        api = FakeSandboxApi()
        # (core's tests use only core: the log resource's own promise is tested in tests/resources_log)
        api.resources = SandboxResources(None, {"more": {"cls": "tests.core.helpers:NoteResource"},
                                                "notes": {"cls": "tests.core.helpers:NoteResource"}})
        outcome: list = []
        logging.getLogger("vxsandbox").disabled = True
        try:
            api.dispatch_request(command).addBoth(outcome.append)
        finally:
            logging.getLogger("vxsandbox").disabled = False
        assert outcome == [None]
        return api

    request = {**{k: v for k, v in fields.items() if k not in ("cmd", "cmd_id", "reply", "acknowledged")},
               "cmd": cmd, "cmd_id": "7", "reply": False}
    unmarked = dispatch(dict(request))
    marked = dispatch({**request, "acknowledged": acknowledged})
    assert marked.killed == unmarked.killed
    if unmarked.killed:
        assert marked.sent == unmarked.sent == []
        return
    [would_be] = unmarked.sent
    assert (would_be["cmd"], would_be["cmd_id"], would_be["reply"]) == (cmd, "7", True)
    if acknowledged is True and cmd in marked.resources.acknowledged and would_be["success"] is True:
        assert marked.sent == []
    else:
        assert marked.sent == [would_be]
