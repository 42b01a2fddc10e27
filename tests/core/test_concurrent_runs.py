"""A child serving several runs at once (``runs_per_child``): lines kept apart by run_id, limits per run."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, hookimpl
from vxsandbox_core.config import SandboxConfig
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.testing import (
    PYTHON_RLIMITS,
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_worker_config,
)

from .bodies import json_values

#: Waits for two messages, then answers the second first: a reply to each (through outbound, which
#: only answers a message of the run that asks) and run.done, every line naming its run.
PAIR_CHILD = r"""
import json, sys
held = []
for line in sys.stdin:
    command = json.loads(line)
    if command.get('cmd') != 'inbound-message':
        continue
    held.append(command)
    if len(held) == 2:
        for c in reversed(held):
            msg = c['msg']
            for out in ({'cmd': 'outbound.reply_to', 'in_reply_to': msg['message_id'], 'run_id': c['run_id'],
                         'content': 'echo ' + msg['content']},
                        {'cmd': 'record.seen', 'run_id': c['run_id'], 'content': msg['content']},
                        {'cmd': 'run.done', 'run_id': c['run_id']}):
                print(json.dumps(out))
        sys.stdout.flush()
        held = []
"""

#: Finishes no run; names a run it does not serve, and sends a line naming none.
STRAY_CHILD = r"""
import json, sys
for line in sys.stdin:
    command = json.loads(line)
    if command.get('cmd') == 'inbound-message':
        print(json.dumps({'cmd': 'record.stray', 'run_id': 99}))
        print(json.dumps({'cmd': 'record.unnamed'}))
        sys.stdout.flush()
"""

#: Never finishes a run.
STUCK_CHILD = "import sys\nfor line in sys.stdin: pass\n"


class Ends:
    """Keeps every run's result."""

    def __init__(self) -> None:
        self.results: list = []

    @hookimpl
    def run_ended(self, api, result):
        self.results.append(result)


def worker(code: str, ends: Ends | None = None, sandbox_extra: dict | None = None, **extra) -> Sandbox:
    extra.setdefault("messages_per_process", 10)
    extra.setdefault("runs_per_child", 2)
    sandbox = {"outbound": {"cls": "vxsandbox_core.testing:StubOutboundResource"}, "run": {"cls": "run"},
               **(sandbox_extra or {})}
    config = python_worker_config(["-c", code], sandbox=sandbox, logging_resource="record", **extra)
    return Sandbox(config, broker=RecordingBroker(), hooks=hooks_with(*([ends] if ends else [])))


def at_once(*runs):
    """Fires with the outcomes of ``process_message`` coroutines run side by side."""
    return gatherResults([Deferred.fromCoroutine(run) for run in runs])


class ConcurrentRunTests(TestCase):
    async def start(self, code: str, **extra) -> Sandbox:
        w = worker(code, **extra)
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        return w

    async def test_two_runs_share_one_child_and_each_line_reaches_its_own_run(self):
        """Two messages at once run in one child; each reply answers its own message, whatever the order."""
        w = await self.start(PAIR_CHILD)
        sent = []
        original = Sandbox.child_for_message

        def recording(self_, msg, api):
            child = original(self_, msg, api)
            send = child.send
            child.send = lambda command, run=None: (sent.append(json.loads(json.dumps(
                {**command, **({"run_id": run.run_id} if run else {})}))), send(command, run))[1]
            return child

        self.patch(Sandbox, "child_for_message", recording)
        first, second = make_user_message(content="one"), make_user_message(content="two")
        outcomes = await at_once(w.process_message(first), w.process_message(second))
        self.assertEqual(outcomes, ["ok", "ok"])
        self.assertEqual(w.pool.spawned, 1)
        replies = {m["in_reply_to"]: m["content"] for m in w.broker.messages()}
        self.assertEqual(replies, {first["message_id"]: "echo one", second["message_id"]: "echo two"})
        inbound = [c for c in sent if c["cmd"] == "inbound-message"]
        self.assertEqual([(c["run_id"], c["msg"]["content"]) for c in inbound], [(1, "one"), (2, "two")])
        seen = [r for r in w.resources.resources["record"].requests if r["cmd"] == "seen"]
        self.assertEqual([r["content"] for r in seen], ["two", "one"])
        # The run_id is the protocol's: resources never see it.
        self.assertNotIn("run_id", seen[0])

    async def test_the_last_allowed_run_ending_first_leaves_the_other_to_finish(self):
        """messages_per_process 2: the run that ends first does not retire the child under the other run."""
        w = await self.start(PAIR_CHILD, messages_per_process=2)
        outcomes = await at_once(w.process_message(make_user_message(content="one")),
                                 w.process_message(make_user_message(content="two")))
        self.assertEqual(outcomes, ["ok", "ok"])
        self.assertEqual(len(w.broker.messages()), 2)
        self.assertEqual(w.pool.live, 0)

    async def test_one_run_at_a_time_without_runs_per_child(self):
        """runs_per_child 1 (the default): the second message gets a child of its own, and no run_id is sent."""
        w = await self.start(STUCK_CHILD, runs_per_child=1, timeout=0.3)
        await at_once(w.process_message(make_user_message()), w.process_message(make_user_message()))
        self.assertEqual(w.pool.spawned, 2)

    async def test_lines_naming_no_run_are_ignored_and_reported(self):
        """A line with a run_id the child is not serving, or with none, reaches no resource and is reported."""
        w = await self.start(STRAY_CHILD, timeout=0.5)
        self.assertEqual(await w.process_message(make_user_message()), "error")
        record = w.resources.resources["record"]
        self.assertEqual([r["cmd"] for r in record.requests], [])
        logs = [msg for _, _, msg in record.logs]
        self.assertTrue(any("run_id 99, not a run it is serving" in m for m in logs), logs)
        # Reported once per run, then counted: the unnamed line is the second of its kind.
        self.assertIn("1 more lines of no run ignored in this run", logs)

    async def test_one_runs_timeout_ends_the_other_with_its_own_reason(self):
        """The run that timed out is killed for its timeout, an error; the run beside it for another run's timeout,
        through no fault of its message: interrupted, so the service has the message delivered again."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        ends = Ends()
        w = worker(STUCK_CHILD, ends, timeout=0.5)
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        first = Deferred.fromCoroutine(w.process_message(make_user_message(content="first")))
        await deferLater(reactor, 0.2, lambda: None)
        second = Deferred.fromCoroutine(w.process_message(make_user_message(content="second")))
        self.assertEqual(await gatherResults([first, second]), ["error", "interrupted"])
        self.assertEqual(w.pool.spawned, 1)
        self.assertEqual([r.kill_reason for r in ends.results], ["timeout", "another run's timeout"])
        self.assertEqual([r.bystander for r in ends.results], [False, True])

    async def test_a_full_child_leaves_the_next_message_to_another(self):
        """With runs_per_child 2 a third message at once is served by a second child."""
        w = await self.start(STUCK_CHILD, timeout=0.3)
        outcomes = await at_once(*(w.process_message(make_user_message()) for _ in range(3)))
        # Each child's first timeout ends the run beside it too: that one is interrupted, to be delivered again.
        self.assertEqual(sorted(outcomes), ["error", "error", "interrupted"])
        self.assertEqual(w.pool.spawned, 2)

    def test_runs_per_child_must_be_positive(self):
        with self.assertRaises(ConfigError) as caught:
            SandboxConfig({"runs_per_child": 0})
        self.assertIn("runs_per_child", str(caught.exception))


class FakeApi:
    """What a run's line needs of its API: requests are counted, reports kept."""

    def __init__(self) -> None:
        self.requests: list = []
        self.reports: list[str] = []

    def dispatch_request(self, command):
        from twisted.internet.defer import succeed

        self.requests.append(command)
        return succeed(None)

    def report(self, msg, level=None):
        self.reports.append(msg)


@settings(max_examples=300, deadline=None)
@given(run_id=json_values, cmd=st.sampled_from(["record.x", "run.done", "log.info"]))
def test_a_line_reaches_the_run_it_names_or_none(run_id, cmd) -> None:
    """Whatever run_id a child puts on a line, the line goes to the run serving under exactly that
    integer, without the field, or to no run at all (reported); the worker never raises."""
    from vxsandbox_core.process import SandboxChild, SandboxRun

    child = SandboxChild(["true"], {}, None, 1024 * 1024, max_runs=10, runs_at_once=2)
    runs = {n: SandboxRun(FakeApi(), 0.0, n) for n in (1, 2)}
    child.runs.update(runs)
    child._line_received(json.dumps({"cmd": cmd, "run_id": run_id}).encode())
    named = runs.get(run_id) if type(run_id) is int else None
    for run in runs.values():
        if run is named:
            assert [c["cmd"] for c in run.api.requests] == [cmd]
            assert "run_id" not in run.api.requests[0]
        else:
            assert run.api.requests == []
    if named is None:
        assert any("not a run it is serving" in r for r in runs[1].api.reports)


#: What the children below share: ``send`` a line, and ``inbound(data)``, the inbound messages among
#: the lines that the bytes just read complete (read with os.read, so select sees what is waiting).
CHILD_LINES = r"""
import json, os
pending = [b""]
def send(obj):
    os.write(1, (json.dumps(obj) + "\n").encode())
def inbound(data):
    *lines, pending[0] = (pending[0] + data).split(b"\n")
    return [c for c in map(json.loads, lines) if c.get("cmd") == "inbound-message"]
"""

#: CHILD_LINES plus serve(delay_for, finish): runs side by side, each finished (finish(command)) delay_for(command)
#: seconds after its message arrives, or never when that is None.
TIMED_LINES = CHILD_LINES + r"""
import select, time
def serve(delay_for, finish):
    later = []
    while True:
        now = time.time()
        for item in [x for x in later if x[0] <= now]:
            later.remove(item)
            finish(item[1])
        wait = max(0.0, min(t for t, _ in later) - now) if later else None
        if not select.select([0], [], [], wait)[0]:
            continue
        data = os.read(0, 65536)
        if not data:
            break
        for command in inbound(data):
            delay = delay_for(command)
            if delay is not None:
                later.append((time.time() + delay, command))
"""

#: Serves runs side by side: each is done at once, or after 0.6 s when its content is "slow"; each
#: says which process served it.
TIMED_CHILD = TIMED_LINES + r"""
PROCESS = "%d-%s" % (os.getpid(), os.urandom(4).hex())
def seen(command):
    content = command["msg"]["content"]
    send({"cmd": "record.seen", "run_id": command["run_id"], "content": content, "process": PROCESS})
    return 0.6 if content == "slow" else 0.0
serve(seen, lambda command: send({"cmd": "run.done", "run_id": command["run_id"]}))
"""


class CpuWornTests(TestCase):
    async def test_a_worn_child_that_is_never_idle_takes_no_further_run_and_is_retired(self):
        """A run ends beside another in a child past half its RLIMIT_CPU: the next message goes to a new
        child, and the worn one is retired once its last run ends instead of being kept warm."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        from vxsandbox_core import pool

        self.patch(pool, "cpu_seconds", lambda pid: 1000.0)
        w = worker(TIMED_CHILD, rlimits={"RLIMIT_CPU": [60, 60], **PYTHON_RLIMITS})
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        slow = Deferred.fromCoroutine(w.process_message(make_user_message(content="slow")))
        self.assertEqual(await w.process_message(make_user_message(content="quick")), "ok")
        self.assertEqual(await w.process_message(make_user_message(content="after")), "ok")
        self.assertEqual(await slow, "ok")
        await deferLater(reactor, 0.1, lambda: None)
        seen = {r["content"]: r["process"] for r in w.resources.resources["record"].requests}
        self.assertEqual(seen["quick"], seen["slow"])
        self.assertNotEqual(seen["after"], seen["slow"])
        self.assertEqual(w.pool.spawned, 2)
        self.assertEqual(len(w.pool.alive), 0)
        self.assertEqual(w.pool.draining, set())


#: Serves overlapping runs (each is done when the next arrives, so one is always open), then at its
#: sixth message stops reading and asks for config.get of a 64 KiB value over and over.
DEAF_AFTER_SIX = CHILD_LINES + r"""
import time
previous, count = None, 0
while True:
    data = os.read(0, 65536)
    if not data:
        break
    for command in inbound(data):
        count += 1
        if previous is not None:
            send({"cmd": "run.done", "run_id": previous})
        previous = command["run_id"]
        if count == 6:
            for i in range(24):
                send({"cmd": "config.get", "key": "big", "run_id": previous})
            time.sleep(60)
"""


class StdinLimitBesideRunsTests(TestCase):
    async def test_a_child_never_between_runs_is_still_killed_at_stdin_limit(self):
        """The worker's own messages count out of stdin_limit only while they may still wait: a child that
        always has a run open, then stops reading, is killed at stdin_limit (1.5 MiB of replies, 1.8 MiB of
        messages before), not left to its timeout."""
        ends = Ends()
        w = worker(DEAF_AFTER_SIX, ends, max_children=1, stdin_limit=256 * 1024, timeout=5,
                   max_pending_requests=1000,
                   sandbox_extra={"config": {"cls": "config", "values": {"big": "v" * (64 * 1024)}}})
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        outcomes = await at_once(*(w.process_message(make_user_message(content=f"{n}" * (300 * 1024)))
                                   for n in range(6)))
        self.assertEqual(outcomes, ["ok"] * 5 + ["error"])
        self.assertEqual(ends.results[-1].kill_reason, "stdin_limit")


#: At each of its first two messages writes 600 KiB to stderr (no newline), then finishes nothing.
LOUD_CHILD = CHILD_LINES + r"""
count = 0
while True:
    data = os.read(0, 65536)
    if not data:
        break
    for command in inbound(data):
        count += 1
        if count <= 2:
            os.write(2, b"x" * (600 * 1024))
"""


class RecvLimitBesideRunsTests(TestCase):
    async def test_output_counts_against_every_run_and_the_oldest_is_killed_first(self):
        """600 KiB before the second run and 600 KiB after: the first run has seen 1.2 MiB, over its 1 MiB
        recv_limit, though the second has seen only 600 KiB."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        ends = Ends()
        w = worker(LOUD_CHILD, ends, recv_limit=1024 * 1024, timeout=3)
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        first = Deferred.fromCoroutine(w.process_message(make_user_message(content="first")))
        await deferLater(reactor, 0.3, lambda: None)
        second = Deferred.fromCoroutine(w.process_message(make_user_message(content="second")))
        self.assertEqual(await gatherResults([first, second]), ["error", "interrupted"])
        self.assertEqual(sorted(r.kill_reason for r in ends.results), ["another run's recv_limit", "recv_limit"])


#: "stuck" never finishes; any other message is answered through outbound, then done, after 0.7 s.
ANSWERING_CHILD = TIMED_LINES + r"""
def answer(command):
    msg = command["msg"]
    send({"cmd": "outbound.reply_to", "run_id": command["run_id"], "in_reply_to": msg["message_id"],
          "content": "echo " + msg["content"]})
    send({"cmd": "run.done", "run_id": command["run_id"]})
serve(lambda command: None if command["msg"]["content"] == "stuck" else 0.7, answer)
"""


class BystanderTests(TestCase):
    async def test_a_message_killed_for_another_runs_fault_is_delivered_again_and_answered(self):
        """Through the service: a stuck message's timeout ends the run beside it in one child; the stuck one is
        acked as an error, the other requeued, served again in a new child and answered once."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        from vxsandbox_core.brokers.memory import MemoryBroker
        from vxsandbox_core.service import WorkerService

        broker = MemoryBroker(prefetch_count=2)
        config = python_worker_config(
            ["-c", ANSWERING_CHILD], sandbox={"outbound": {"cls": "vxsandbox_core.testing:StubOutboundResource"},
                                              "run": {"cls": "run"}},
            logging_resource="record", transport_name="tr", messages_per_process=10, runs_per_child=2, timeout=1.0)
        worker = Sandbox(config, broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        stuck = make_user_message(transport_name="tr", content="stuck")
        slow = make_user_message(transport_name="tr", content="slow")
        # The stuck run's timeout (at 1 s) comes while the slow one, begun 0.5 s later, still runs (until 1.2 s);
        # served again alone, the slow one ends within its timeout.
        await broker.publish("tr.inbound", stuck.to_json().encode())
        await deferLater(reactor, 0.5, lambda: None)
        await broker.publish("tr.inbound", slow.to_json().encode())
        got = Deferred.fromCoroutine(broker.get("tr.outbound"))
        got.addTimeout(10, reactor)
        reply = json.loads((await got).body)
        self.assertEqual((reply["in_reply_to"], reply["content"]), (slow["message_id"], "echo slow"))
        for _ in range(50):
            if service.counts["ok"]:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((service.counts["error"], service.counts["interrupted"], service.counts["ok"]), (1, 1, 1))
        self.assertEqual(worker.pool.spawned, 2)
        self.assertEqual(broker.drain("tr.outbound"), [])
        self.assertEqual(broker.drain("tr.inbound.dead"), [])


#: At its second message, names the first run as the reason it ends (a line marked fatal), then exits 1.
FATAL_CHILD = CHILD_LINES + r"""
runs = []
while True:
    data = os.read(0, 65536)
    if not data:
        break
    for command in inbound(data):
        runs.append(command["run_id"])
        if len(runs) == 2:
            send({"cmd": "record.fatal", "run_id": runs[0], "fatal": True})
            os._exit(1)
"""


class FatalLineTests(TestCase):
    async def test_the_run_a_child_ends_for_fails_and_the_one_beside_it_is_interrupted(self):
        """A line of run 1 marked fatal, then the exit: run 1 fails (exited with 1), run 2 ends as another
        run's fatal error, interrupted; the resource never sees the marker."""
        ends = Ends()
        w = worker(FATAL_CHILD, ends, timeout=5)
        self.addCleanup(lambda: Deferred.fromCoroutine(w.teardown()))
        await w.setup()
        outcomes = await at_once(w.process_message(make_user_message(content="first")),
                                 w.process_message(make_user_message(content="second")))
        self.assertEqual(outcomes, ["error", "interrupted"])
        self.assertEqual([(r.exit_code, r.kill_reason) for r in ends.results],
                         [(1, None), (1, "another run's fatal error")])
        record = w.resources.resources["record"]
        self.assertEqual([(r["cmd"], "fatal" in r) for r in record.requests], [("fatal", False)])
