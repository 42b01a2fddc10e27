"""Tests for spawning real sandboxed children: limits, timeouts, output limits and garbage output."""

from __future__ import annotations

import os
import resource

from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, hookimpl
from vxsandbox_core.config import SandboxConfig
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.rlimits import clamp_rlimits
from vxsandbox_core.testing import hooks_with, make_user_message, python_worker_config


def code_worker(code: str, **extra) -> Sandbox:
    """A worker whose child runs the Python ``code``, logging through the ``record`` resource."""
    extra.setdefault("logging_resource", "record")
    return Sandbox(python_worker_config(["-c", code], **extra), hooks=hooks_with())


#: A child that reports its scheduling policy through the ``record`` resource.
POLICY_CHILD = (
    "import json, os, sys\n"
    "print(json.dumps({'cmd': 'record.policy', 'policy': os.sched_getscheduler(0)})); sys.stdout.flush()\n"
    "sys.stdin.readline(); sys.stdin.readline()\n"
)


class ProcessTests(TestCase):
    async def run_code(self, code: str, **extra):
        worker = code_worker(code, **extra)
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        return worker, outcome, worker.resources.resources["record"]

    async def test_infinite_loop_is_killed_at_timeout(self):
        """A child that never ends is killed once its timeout passes."""
        worker, outcome, record = await self.run_code("while True: pass", timeout=0.5)
        self.assertEqual(outcome, "error")

    async def test_timeout_reason_is_recorded(self):
        """The run's result names the timeout as the kill reason."""
        results = []

        class Plugin:
            @hookimpl
            def run_ended(self, api, result):
                results.append(result)

        worker = Sandbox(python_worker_config(["-c", "import time; time.sleep(30)"], timeout=0.3),
                         hooks=hooks_with(Plugin()))
        await worker.setup()
        await worker.process_message(make_user_message())
        self.assertEqual(results[0].kill_reason, "timeout")
        self.assertLess(results[0].duration, 5)

    async def test_stdout_flood_is_killed_at_recv_limit_and_reported(self):
        """A child writing 10 MiB to stdout is killed at recv_limit and the owner is told."""
        code = "import sys\nfor _ in range(10): sys.stdout.write('x' * (1024 * 1024)); sys.stdout.flush()"
        worker, outcome, record = await self.run_code(code)
        self.assertEqual(outcome, "error")
        self.assertTrue(any("recv_limit" in msg for _, _, msg in record.logs), record.logs)

    async def test_stderr_lines_are_reported(self):
        """Each line a child writes to stderr reaches the logging resource as an error."""
        code = "import sys; sys.stderr.write('first problem\\nsecond problem\\n')"
        worker, outcome, record = await self.run_code(code)
        self.assertEqual(outcome, "ok")
        self.assertEqual([(lvl, m) for _, lvl, m in record.logs],
                         [(40, "first problem"), (40, "second problem")])

    async def test_garbage_lines_do_not_break_the_worker(self):
        """Lines that are not commands are reported (once per kind) and ignored; the good request still works."""
        code = (
            "import sys, json\n"
            "sys.stdin.readline()\n"
            "for line in ['{}', '[1,2]', 'not json', '\"str\"', '{\"cmd\": \"x\", \"reply\": true}']:\n"
            "    sys.stdout.write(line + '\\n')\n"
            "sys.stdout.write(json.dumps({'cmd': 'record.ok', 'cmd_id': 'a'}) + '\\n'); sys.stdout.flush()\n"
            "print(sys.stdin.readline(), file=sys.stderr)\n"
        )
        worker, outcome, record = await self.run_code(code)
        self.assertEqual(outcome, "ok")
        self.assertEqual([r["cmd"] for r in record.requests], ["ok"])
        warnings = [m for _, lvl, m in record.logs if lvl == 30]
        # The first of each kind is reported, then how many more were ignored: a flood is two lines.
        self.assertEqual(len(warnings), 3, warnings)
        self.assertIn("no 'cmd' string: '{}'", warnings[0])
        self.assertIn("never sent", warnings[1])
        self.assertEqual(warnings[2], "3 more invalid lines ignored in this run")
        self.assertTrue(any('"cmd_id":"a"' in m for _, lvl, m in record.logs if lvl == 40), record.logs)

    async def test_long_line_without_newline_does_not_raise(self):
        """A 2 MiB line with no newline ends in recv_limit or a clean exit, never an exception."""
        code = "import sys; sys.stdout.write('{' * (2 * 1024 * 1024)); sys.stdout.flush()"
        worker, outcome, record = await self.run_code(code)
        self.assertEqual(outcome, "error")
        worker, outcome, record = await self.run_code(code, recv_limit=4 * 1024 * 1024)
        self.assertEqual(outcome, "ok")

    async def test_rlimits_reach_the_child(self):
        """The child's own limits are the configured ones, clamped to the worker's."""
        code = (
            "import json, resource, sys\n"
            "names = ['RLIMIT_CPU', 'RLIMIT_NOFILE', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_DATA', 'RLIMIT_CORE']\n"
            "lim = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}\n"
            "print(json.dumps({'cmd': 'record.limits', 'limits': lim})); sys.stdout.flush()\n"
            "sys.stdin.readline(); sys.stdin.readline()\n"
        )
        rlimits = {"RLIMIT_CPU": [5, 6], "nofile": 12, "RLIMIT_AS": 400 * 1024 * 1024,
                   resource.RLIMIT_FSIZE: 2048, "RLIMIT_DATA": None}
        worker, outcome, record = await self.run_code(code, rlimits=rlimits)
        limits = next(r for r in record.requests if r["cmd"] == "limits")["limits"]
        expected = clamp_rlimits(worker.rlimits)
        for name, (soft, hard) in limits.items():
            self.assertEqual((soft, hard), expected[getattr(resource, name)], name)
        self.assertEqual(limits["RLIMIT_CPU"], [5, 6])
        self.assertEqual(limits["RLIMIT_NOFILE"], [12, 12])
        self.assertEqual(limits["RLIMIT_FSIZE"], [2048, 2048])
        # The seed's 1 MiB core default can never exceed what the worker itself may do.
        own_core = resource.getrlimit(resource.RLIMIT_CORE)
        self.assertLessEqual(limits["RLIMIT_CORE"][1] if limits["RLIMIT_CORE"][1] != -1 else 2**63,
                             own_core[1] if own_core[1] != -1 else 2**63)

    async def test_children_start_as_batch_tasks_and_the_worker_keeps_its_policy(self):
        """A woken child does not preempt the worker (SCHED_BATCH); the worker stays SCHED_OTHER."""
        self.assertEqual(os.sched_getscheduler(0), os.SCHED_OTHER)
        _, _, record = await self.run_code(POLICY_CHILD)
        policy = next(r for r in record.requests if r["cmd"] == "policy")["policy"]
        self.assertEqual(policy, os.SCHED_BATCH)
        self.assertEqual(os.sched_getscheduler(0), os.SCHED_OTHER)

    async def test_a_worker_under_another_policy_leaves_it_to_its_children(self):
        """An operator who started the worker as SCHED_IDLE, say, chose that for its children too."""
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        try:
            _, _, record = await self.run_code(POLICY_CHILD)
            self.assertEqual(os.sched_getscheduler(0), os.SCHED_IDLE)
        finally:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        policy = next(r for r in record.requests if r["cmd"] == "policy")["policy"]
        self.assertEqual(policy, os.SCHED_IDLE)

    async def test_children_start_when_the_policy_cannot_be_changed(self):
        """A container may refuse sched_setscheduler: children then start under the worker's policy."""
        def refuse(pid, policy, param):
            raise PermissionError(1, "Operation not permitted")

        self.patch(os, "sched_setscheduler", refuse)
        _, outcome, record = await self.run_code(POLICY_CHILD)
        self.assertEqual(outcome, "ok")
        policy = next(r for r in record.requests if r["cmd"] == "policy")["policy"]
        self.assertEqual(policy, os.SCHED_OTHER)

    async def test_missing_program_refuses_the_message(self):
        """A program that vanished after config time refuses messages (kept for later) instead of failing them."""
        worker = code_worker("pass")
        await worker.setup()
        worker.executable = "/nonexistent/program"
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "refused")

    async def test_program_that_cannot_start_is_a_failed_run(self):
        """A program that exists but cannot be executed by the kernel fails its run with the reason reported."""
        broken = self.mktemp()
        with open(broken, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(broken, 0o755)
        worker = code_worker("pass")
        await worker.setup()
        worker.executable = broken
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "error")
        record = worker.resources.resources["record"]
        self.assertTrue(any(broken in m for _, _, m in record.logs), record.logs)

    def test_unknown_rlimit_is_a_config_error(self):
        """An rlimit name that does not exist is refused with the key and name."""
        with self.assertRaises(ConfigError) as e:
            SandboxConfig({"rlimits": {"RLIMIT_BOGUS": 1}})
        self.assertIn("rlimits", str(e.exception))
        self.assertIn("RLIMIT_BOGUS", str(e.exception))

    def test_clamp_never_raises_a_limit(self):
        """A requested limit above the worker's own hard limit is lowered to it."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        clamped = clamp_rlimits({resource.RLIMIT_NOFILE: (hard + 1000, hard + 1000)})
        self.assertEqual(clamped[resource.RLIMIT_NOFILE], (min(soft, hard), hard))


    async def test_lone_surrogates_from_the_child_are_replaced_and_reported_once(self):
        """Half characters in cmd_id and values get prompt replies (cmd_id kept exactly), one report, no traceback."""
        code = (
            "import sys, json\n"
            "sys.stdin.readline()\n"
            "ids = ['id-\\ud800-%d' % i for i in range(50)]\n"
            "for i in ids:\n"
            "    sys.stdout.write(json.dumps({'cmd': 'record.set', 'cmd_id': i, 'value': 'v\\udc00'}) + '\\n')\n"
            "sys.stdout.flush()\n"
            "got = set()\n"
            "while len(got) < len(ids):\n"
            "    got.add(json.loads(sys.stdin.readline())['cmd_id'])\n"
            "sys.stdout.write(json.dumps({'cmd': 'record.done', 'matched': sorted(got) == sorted(ids)}) + '\\n')\n"
            "sys.stdout.flush(); sys.stdin.readline()\n"
        )
        with self.assertLogs("vxsandbox", "DEBUG") as logs:
            worker, outcome, record = await self.run_code(code, timeout=20)
        self.assertEqual(outcome, "ok")
        values = [r["value"] for r in record.requests if r["cmd"] == "set"]
        self.assertEqual(values, ["v\ufffd"] * 50)
        self.assertEqual(record.requests[-1]["matched"], True)
        owner = [m for _, _, m in record.logs]
        self.assertEqual(len(owner), 2, owner)
        self.assertIn("lone UTF-16 surrogates", owner[0])
        self.assertIn("'record.set' fields value", owner[0])
        self.assertEqual(owner[1], "49 more lines with lone surrogates repaired in this run")
        self.assertFalse([r for r in logs.records if r.exc_info], logs.output)


_DEAF_CHILD = r'''
import json, sys, time
sys.stdin.readline()
# Ask for a 64 KiB value again and again and never read a reply: the worker must not queue them all.
line = json.dumps({"cmd": "config.get", "key": "big", "reply": False}) + "\n"
for i in range(int(sys.argv[1])):
    sys.stdout.write(line)
    if i % 50 == 0:
        sys.stdout.flush()
        time.sleep(0.01)
sys.stdout.flush()
time.sleep(30)
'''


class StdinLimitTests(TestCase):
    async def deaf_run(self, requests: int, **extra):
        """Run a child that floods ``config.get`` of a 64 KiB value and never reads; return results and peak queue."""
        from vxsandbox_core.process import queued_bytes

        results, peak = [], [0]

        class Plugin:
            @hookimpl
            def run_ended(self, api, result):
                results.append(result)

            @hookimpl
            def reply_sent(self, api, command, reply):
                peak[0] = max(peak[0], queued_bytes(api.child))

        config = python_worker_config(
            ["-c", _DEAF_CHILD, str(requests)], logging_resource="record",
            max_pending_requests=10000,
            sandbox={"config": {"cls": "config", "values": {"big": "v" * (64 * 1024)}}}, **extra)
        worker = Sandbox(config, hooks=hooks_with(Plugin()))
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        return outcome, results[0], peak[0], worker.resources.resources["record"]

    async def test_child_that_stops_reading_is_killed_at_stdin_limit(self):
        """Replies a child never reads are queued only up to stdin_limit; then it is killed with the reason."""
        limit = 2 * 1024 * 1024
        outcome, result, peak, record = await self.deaf_run(2000, stdin_limit=limit, timeout=20)
        self.assertEqual(outcome, "error")
        self.assertEqual(result.kill_reason, "stdin_limit")
        self.assertLess(result.duration, 15)
        # Never more than the limit waits on the child's stdin (the inbound message is not a reply).
        self.assertLessEqual(peak, limit + 64 * 1024)
        reasons = [m for _, lvl, m in record.logs if lvl == 40]
        self.assertTrue(any("stdin_limit" in m and "not reading" in m for m in reasons), reasons)

    async def test_replies_within_stdin_limit_are_not_refused(self):
        """Unread replies under stdin_limit do not kill the child: only its own timeout ends it."""
        outcome, result, peak, record = await self.deaf_run(20, stdin_limit=4 * 1024 * 1024, timeout=1)
        self.assertEqual(result.kill_reason, "timeout")
        self.assertGreater(peak, 20 * 1024)

    def test_stdin_limit_must_be_positive(self):
        """A stdin_limit of zero is refused with the key's name."""
        with self.assertRaises(ConfigError) as e:
            SandboxConfig({"stdin_limit": 0})
        self.assertIn("stdin_limit", str(e.exception))


class LogLineCapTests(TestCase):
    async def test_stderr_flood_is_capped_with_one_summary_line(self):
        """500 000 short stderr lines give max_log_lines_per_run lines and one line counting the rest."""
        code = "import sys; sys.stderr.write('x\\n' * 500000); sys.stderr.flush()"
        worker = code_worker(code, max_log_lines_per_run=50)
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "ok")
        logs = [m for _, _, m in worker.resources.resources["record"].logs]
        self.assertEqual(logs[:50], ["x"] * 50)
        self.assertEqual(logs[50:], ["499950 more log lines dropped in this run "
                                     "(max_log_lines_per_run is 50)"])

    async def test_stderr_written_before_done_is_all_logged(self):
        """Lines still in the stderr pipe when the app says it is done are logged, not dropped with the child."""
        code = ("import sys, json\n"
                "sys.stdin.readline()\n"
                "sys.stderr.write(''.join('stderr line %05d\\n' % i for i in range(3000))); sys.stderr.flush()\n"
                "sys.stdout.write(json.dumps({'cmd': 'run.done', 'cmd_id': '1', 'reply': False}) + '\\n')\n"
                "sys.stdout.flush(); sys.stdin.readline()\n")
        worker = code_worker(code, max_log_lines_per_run=5000, sandbox={"run": {"cls": "run"}})
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "ok")
        logs = [m for _, _, m in worker.resources.resources["record"].logs]
        self.assertEqual(logs, [f"stderr line {i:05d}" for i in range(3000)])

    async def test_default_cap_keeps_a_thousand_lines(self):
        """Without config, a run keeps its first 1000 stderr lines."""
        code = "import sys; sys.stderr.write(''.join('line %d\\n' % i for i in range(1500)))"
        worker = code_worker(code)
        await worker.setup()
        await worker.process_message(make_user_message())
        logs = [m for _, _, m in worker.resources.resources["record"].logs]
        self.assertEqual(len(logs), 1001)
        self.assertEqual(logs[999], "line 999")
        self.assertIn("500 more log lines dropped", logs[1000])


class WriteNowTests(TestCase):
    """A line to a child goes into its pipe at once, and never overtakes one Twisted still holds."""

    async def test_lines_go_into_the_pipe_at_once_and_in_order(self):
        import sys

        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.protocol import ProcessProtocol

        from vxsandbox_core.process import queued_bytes_of, write_now

        class Collect(ProcessProtocol):
            def __init__(self):
                self.out, self.ended = bytearray(), Deferred()

            def outReceived(self, data):
                self.out += data

            def processEnded(self, reason):
                self.ended.callback(None)

        # Reads nothing for half a second, then echoes all of its stdin.
        code = "import sys, time; time.sleep(0.5); sys.stdout.buffer.write(sys.stdin.buffer.read())"
        proto = Collect()
        transport = reactor.spawnProcess(proto, sys.executable, [sys.executable, "-c", code], env=None)
        writer = transport.pipes[0]
        write_now(transport, b"first\n")
        self.assertEqual(queued_bytes_of(writer), 0)  # in the pipe already, no reactor turn needed
        big = b"x" * (512 * 1024) + b"\n"  # more than a pipe holds: the rest waits in Twisted's queue
        write_now(transport, big)
        held = queued_bytes_of(writer)
        self.assertGreater(held, 0)
        write_now(transport, b"last\n")
        self.assertEqual(queued_bytes_of(writer), held + 5)  # queued behind, not written past the rest
        transport.closeStdin()
        await proto.ended
        self.assertEqual(bytes(proto.out), b"first\n" + big + b"last\n")
