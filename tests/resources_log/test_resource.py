"""Tests for the ``log`` resource: every command and error reply, through handlers and a real child."""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import TestCase

from tests.core.bodies import json_values
from vxsandbox_core import ConfigError, Sandbox
from vxsandbox_core.testing import FakeSandboxApi, hooks_with, make_user_message, python_child, python_worker_config
from vxsandbox_resources_log import LoggingResource, stringify, truncate


class CapturingHandler(logging.Handler):
    """Keeps every record logged to the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in self.records]


class LogCaptureMixin:
    """Attaches a :class:`CapturingHandler` to ``vxsandbox.app`` for the test's duration."""

    def capture(self, name: str = "vxsandbox.app") -> CapturingHandler:
        handler = CapturingHandler()
        logger = logging.getLogger(name)
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.removeHandler, handler)  # type: ignore[attr-defined]
        self.addCleanup(logger.setLevel, old_level)  # type: ignore[attr-defined]
        return handler


class StoringLoggingResource(LoggingResource):
    """A subclass that keeps lines instead of logging them, answering through a Deferred."""

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.stored: list[tuple[str, int, str]] = []

    def log(self, api: Any, msg: str, level: int) -> Deferred[None]:
        self.stored.append((api.sandbox_id, level, msg))
        return succeed(None)


class BrokenLoggingResource(LoggingResource):
    """A subclass whose log backend always fails."""

    def log(self, api: Any, msg: str, level: int) -> Deferred[None]:
        return fail(RuntimeError("log store is down"))


def command(cmd: str, **fields: Any) -> dict[str, Any]:
    return {"cmd": cmd, "cmd_id": "1", "reply": False, **fields}


class TruncateTests(TestCase):
    def test_short_message_is_unchanged(self):
        """A message no longer than max_length is returned as it is."""
        self.assertEqual(truncate("x" * 100, 100), "x" * 100)

    def test_long_message_is_cut_and_says_so(self):
        """A longer message is cut to max_length and ends by saying how many characters were dropped."""
        line = truncate("a" * 1000, 100)
        self.assertEqual(len(line), 100)
        kept = line.index(" ... [")
        self.assertEqual(line[kept:], f" ... [truncated {1000 - kept} characters]")

    def test_truncating_twice_changes_nothing(self):
        """A truncated line is short enough to pass through truncation again untouched."""
        once = truncate("b" * 50000, 16384)
        self.assertEqual(truncate(once, 16384), once)

    def test_stringify_writes_json_for_non_strings(self):
        """Objects, lists, numbers, booleans are written as JSON; strings stay as they are."""
        self.assertEqual(stringify({"b": 1, "a": [True, None]}), '{"a": [true, null], "b": 1}')
        self.assertEqual(stringify(42), "42")
        self.assertEqual(stringify(False), "false")
        self.assertEqual(stringify("héllo"), "héllo")


class LoggingResourceUnitTests(LogCaptureMixin, TestCase):
    def setUp(self):
        self.api = FakeSandboxApi(sandbox_id="tenant-7")

    def resource(self, **config: Any) -> LoggingResource:
        return LoggingResource("log", None, {"cls": "log", **config})

    async def test_each_level_command_logs_at_its_level(self):
        """debug, info, warning, error and critical log at their own level and reply success."""
        handler = self.capture()
        res = self.resource()
        for name, level in [("debug", 10), ("info", 20), ("warning", 30), ("error", 40), ("critical", 50)]:
            reply = await res.dispatch_request(self.api, command(name, msg=f"{name} line"))
            self.assertTrue(reply["success"], reply)
            self.assertEqual(handler.lines()[-1], (level, f"[tenant-7] {name} line"))

    async def test_log_uses_given_level(self):
        """log with an integer level logs at that level."""
        handler = self.capture()
        reply = await self.resource().dispatch_request(self.api, command("log", msg="hi", level=40))
        self.assertTrue(reply["success"])
        self.assertEqual(handler.lines(), [(40, "[tenant-7] hi")])

    async def test_log_defaults_to_info(self):
        """log without a level logs at INFO."""
        handler = self.capture()
        await self.resource().dispatch_request(self.api, command("log", msg="hi"))
        self.assertEqual(handler.lines(), [(logging.INFO, "[tenant-7] hi")])

    async def test_records_carry_sandbox_id(self):
        """Each record has the sandbox_id as an attribute for structured formatters."""
        handler = self.capture()
        await self.resource().dispatch_request(self.api, command("info", msg="hi"))
        self.assertEqual(handler.records[0].sandbox_id, "tenant-7")

    async def test_percent_signs_are_logged_verbatim(self):
        """A message with %-formatting characters is logged as written, not interpolated."""
        handler = self.capture()
        await self.resource().dispatch_request(self.api, command("info", msg="100%s %d"))
        self.assertEqual(handler.lines(), [(20, "[tenant-7] 100%s %d")])

    async def test_non_string_msg_is_json(self):
        """An object msg is logged as its JSON text."""
        handler = self.capture()
        reply = await self.resource().dispatch_request(self.api, command("info", msg={"n": 1}))
        self.assertTrue(reply["success"])
        self.assertEqual(handler.lines(), [(20, '[tenant-7] {"n": 1}')])

    async def test_missing_msg_is_an_error_naming_the_field(self):
        """A request without msg gets success false and a reason naming 'msg'."""
        handler = self.capture()
        reply = await self.resource().dispatch_request(self.api, command("info"))
        self.assertFalse(reply["success"])
        self.assertIn("'msg'", reply["reason"])
        self.assertEqual(handler.lines(), [])

    async def test_null_msg_is_an_error(self):
        """msg null is treated as missing."""
        reply = await self.resource().dispatch_request(self.api, command("log", msg=None))
        self.assertFalse(reply["success"])
        self.assertIn("'msg'", reply["reason"])

    async def test_bad_level_types_are_errors_naming_the_field(self):
        """A string, float, boolean or negative level gets success false naming 'level'."""
        for level in ["INFO", 20.5, True, -1, [20]]:
            reply = await self.resource().dispatch_request(self.api, command("log", msg="x", level=level))
            self.assertFalse(reply["success"], level)
            self.assertIn("'level'", reply["reason"])

    async def test_level_commands_ignore_a_level_field(self):
        """info with a (even invalid) level field still logs at INFO and succeeds."""
        handler = self.capture()
        reply = await self.resource().dispatch_request(self.api, command("info", msg="x", level="bogus"))
        self.assertTrue(reply["success"])
        self.assertEqual(handler.lines(), [(20, "[tenant-7] x")])

    async def test_long_message_is_truncated_in_the_line(self):
        """A message over max_length is cut and the line says how much was cut."""
        handler = self.capture()
        reply = await self.resource(max_length=100).dispatch_request(self.api, command("info", msg="y" * 500))
        self.assertTrue(reply["success"])
        line = handler.lines()[0][1]
        self.assertTrue(line.startswith("[tenant-7] yyy"))
        self.assertRegex(line, r" \.\.\. \[truncated \d+ characters\]$")
        self.assertEqual(len(line), len("[tenant-7] ") + 100)

    async def test_default_max_length_is_16_kib(self):
        """Without config, 16384 characters pass whole and 16385 are truncated."""
        handler = self.capture()
        res = self.resource()
        await res.dispatch_request(self.api, command("info", msg="z" * 16384))
        await res.dispatch_request(self.api, command("info", msg="z" * 16385))
        whole, cut = handler.lines()
        self.assertNotIn("truncated", whole[1])
        self.assertIn("truncated", cut[1])

    async def test_configured_logger_name(self):
        """Lines go to the logger named in config."""
        handler = self.capture("tenants.apps")
        await self.resource(logger="tenants.apps").dispatch_request(self.api, command("info", msg="x"))
        self.assertEqual(handler.lines(), [(20, "[tenant-7] x")])

    def test_bad_config_names_the_key(self):
        """A max_length that is not an integer, or too small, is a config error naming the key."""
        with self.assertRaises(ConfigError) as e:
            self.resource(max_length="big")
        self.assertEqual(e.exception.key, "sandbox.log.max_length")
        with self.assertRaises(ConfigError) as e:
            self.resource(max_length=10)
        self.assertEqual(e.exception.key, "sandbox.log.max_length")

    async def test_subclass_log_receives_lines(self):
        """A subclass overriding log(api, msg, level) gets every line, truncated and stringified."""
        res = StoringLoggingResource("log", None, {"cls": "x", "max_length": 64})
        await res.dispatch_request(self.api, command("warning", msg=[1, 2]))
        await res.dispatch_request(self.api, command("log", msg="q" * 100, level=15))
        self.assertEqual(res.stored[0], ("tenant-7", 30, "[1, 2]"))
        self.assertEqual(res.stored[1][:2], ("tenant-7", 15))
        self.assertEqual(len(res.stored[1][2]), 64)

    async def test_failing_backend_still_answers_success(self):
        """When the subclass's log fails, the app still gets success and the operator gets the line."""
        handler = self.capture()
        res = BrokenLoggingResource("log", None, {"cls": "x"})
        reply = await res.dispatch_request(self.api, command("info", msg="keep me"))
        self.assertTrue(reply["success"])
        self.assertIn("keep me", handler.lines()[0][1])
        self.assertEqual(handler.records[0].exc_info[0], RuntimeError)

    async def test_default_log_returns_a_deferred(self):
        """The default log method returns a Deferred that has fired."""
        self.capture()
        d = self.resource().log(self.api, "x", 20)
        self.assertIsInstance(d, Deferred)
        self.assertIsNone(self.successResultOf(d))

    def test_resolves_from_legacy_vumi_name(self):
        """The seed's class path still names this resource."""
        worker = Sandbox(python_worker_config(["-c", "pass"], sandbox={
            "log": {"cls": "vumi.application.sandbox.LoggingResource"}}), hooks=hooks_with())
        self.assertIsInstance(worker.resources.resources["log"], LoggingResource)

    async def test_unknown_command_kills_the_sandbox(self):
        """A command the resource does not have kills the sandbox."""
        await self.resource().dispatch_request(self.api, command("shout", msg="x"))
        self.assertEqual(self.api.killed, ["unknown command"])


class LoggingResourceChildTests(LogCaptureMixin, TestCase):
    """The resource driven by a real child process over real pipes."""

    async def run_child(self, requests: list[dict[str, Any]], **extra: Any):
        sandbox = {"log": {"cls": "log", **extra.pop("log_config", {})}}
        worker = Sandbox(python_worker_config(python_child(requests), sandbox=sandbox, **extra),
                         hooks=hooks_with())
        await worker.setup()
        outcome = await worker.process_message(make_user_message(sandbox_id="child-tenant"))
        return outcome, worker.resources.resources["record"].replies(), worker

    async def test_every_command_through_a_child(self):
        """A child's log, debug, info, warning, error and critical requests all succeed and are logged."""
        handler = self.capture()
        requests = [
            {"cmd": "log.log", "msg": "at 35", "level": 35},
            {"cmd": "log.log", "msg": "default"},
            {"cmd": "log.debug", "msg": "d"},
            {"cmd": "log.info", "msg": "i"},
            {"cmd": "log.warning", "msg": "w"},
            {"cmd": "log.error", "msg": "e"},
            {"cmd": "log.critical", "msg": "c"},
        ]
        outcome, replies, _ = await self.run_child(requests)
        self.assertEqual(outcome, "ok")
        self.assertEqual([r["success"] for r in replies], [True] * 7)
        self.assertEqual([r["cmd"] for r in replies], [r["cmd"] for r in requests])
        self.assertEqual(handler.lines(), [
            (35, "[child-tenant] at 35"), (20, "[child-tenant] default"), (10, "[child-tenant] d"),
            (20, "[child-tenant] i"), (30, "[child-tenant] w"), (40, "[child-tenant] e"),
            (50, "[child-tenant] c"),
        ])

    async def test_error_replies_through_a_child(self):
        """A child gets success false with reasons naming msg and level for bad requests."""
        requests = [
            {"cmd": "log.info"},
            {"cmd": "log.log", "msg": "x", "level": "WARNING"},
        ]
        self.capture()
        outcome, replies, _ = await self.run_child(requests)
        self.assertEqual(outcome, "ok")
        self.assertEqual([r["success"] for r in replies], [False, False])
        self.assertIn("'msg'", replies[0]["reason"])
        self.assertIn("'level'", replies[1]["reason"])

    async def test_non_ascii_and_objects_through_a_child(self):
        """Non-ASCII text survives the pipes and objects are logged as JSON."""
        handler = self.capture()
        outcome, replies, _ = await self.run_child([
            {"cmd": "log.info", "msg": "Molo, ñandú ☕"},
            {"cmd": "log.info", "msg": {"step": 2, "ok": True}},
        ])
        self.assertEqual([r["success"] for r in replies], [True, True])
        self.assertEqual(handler.lines(), [(20, "[child-tenant] Molo, ñandú ☕"),
                                           (20, '[child-tenant] {"ok": true, "step": 2}')])

    async def test_huge_message_through_a_child_is_truncated(self):
        """A 100 000-character message from a child is logged cut to max_length and says so."""
        handler = self.capture()
        outcome, replies, _ = await self.run_child([{"cmd": "log.info", "msg": "m" * 100_000}],
                                                   log_config={"max_length": 1000})
        self.assertTrue(replies[0]["success"])
        (level, line), = handler.lines()
        self.assertEqual(len(line), len("[child-tenant] ") + 1000)
        self.assertRegex(line, r"\[truncated \d+ characters\]$")

    async def test_stderr_lines_reach_the_log_as_logging_resource(self):
        """As the worker's logging_resource, the resource logs the child's stderr with the sandbox_id."""
        handler = self.capture()
        code = "import sys; sys.stderr.write('oops from child\\n'); sys.stderr.flush()"
        worker = Sandbox(python_worker_config(["-c", code], sandbox={"log": {"cls": "log"}},
                                              logging_resource="log"), hooks=hooks_with())
        await worker.setup()
        await worker.process_message(make_user_message(sandbox_id="child-tenant"))
        self.assertTrue(any("[child-tenant]" in line and "oops from child" in line
                            for _, line in handler.lines()), handler.lines())

    async def test_log_flood_is_capped_per_run_with_one_summary(self):
        """Past max_log_lines_per_run, log requests still succeed but are dropped, and one line counts them."""
        handler = self.capture()
        requests = [{"cmd": "log.info", "msg": f"n{i}"} for i in range(300)]
        outcome, replies, _ = await self.run_child(requests, max_log_lines_per_run=100,
                                                   max_pending_requests=1000, logging_resource="log")
        self.assertEqual(outcome, "ok")
        self.assertEqual([r["success"] for r in replies], [True] * 300)
        lines = handler.lines()
        self.assertEqual(lines[:100], [(20, f"[child-tenant] n{i}") for i in range(100)])
        self.assertEqual(lines[100:], [(30, "[child-tenant] 200 more log lines dropped in this run "
                                            "(max_log_lines_per_run is 100)")])




class BrokenLog(LoggingResource):
    def log(self, api: Any, msg: str, level: int) -> Any:
        return fail(RuntimeError("the log store is down"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(LoggingResource.ACKNOWLEDGED)), msg=json_values,
       extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("cmd", "cmd_id", "reply", "msg")),
                             json_values, max_size=3),
       broken=st.booleans(), lines_left=st.integers(0, 2))
def test_acknowledged_commands_reply_exactly_success_whenever_their_field_is_there(
        name: str, msg: Any, extra: dict[str, Any], broken: bool, lines_left: int) -> None:
    """What ACKNOWLEDGED promises the runner: with the field present (not null) the reply is `success: true` and
    nothing more, whatever else the request carries, the backend fails or the run's log lines ran out; without
    it, a failure. The runner answers these requests itself on that promise."""
    field = LoggingResource.ACKNOWLEDGED[name]
    api = FakeSandboxApi(sandbox_id="tenant-7", config={"max_log_lines_per_run": 2})
    api.take_log_lines(2 - lines_left)
    res = (BrokenLog if broken else LoggingResource)("log", None, {"cls": "log"})
    logging.getLogger("vxsandbox.app").disabled = True
    try:
        replies: list[Any] = []
        res.dispatch_request(api, command(name, **extra, **{field: msg})).addBoth(replies.append)
    finally:
        logging.getLogger("vxsandbox.app").disabled = False
    expected = {"cmd": name, "cmd_id": "1", "reply": True, "success": True}
    if msg is None:
        assert replies[0]["success"] is False
    else:
        assert replies == [expected]
