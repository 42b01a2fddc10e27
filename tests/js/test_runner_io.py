"""runner.js on its own pipes: lines cut anywhere, multi-byte characters split, non-blocking pipes, end of input.

The runner reads fd 0 and writes fd 1 itself (not through process.stdin and
process.stdout); these tests drive it with a plain subprocess, as the worker
would, and check every line arrives whole whatever the chunking.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxsandbox_js.node import runner_path

pytestmark = pytest.mark.node

#: Replies with the message's content, its length in UTF-16 units, then logs and ends the run.
ECHO_APP = """
api.on_inbound_message = function (command) {
    var self = this, content = command.msg.content;
    self.request('outbound.reply_to', {content: content, length: content.length}, function () { self.done(); });
};
"""

#: Sends one request whose line is ``size`` characters, then ends the run.
BIG_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.request('log.info', {msg: 'x'.repeat(command.msg.size)}, function () { self.done(); });
};
"""


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def initialize(app: str, acknowledged: dict[str, str] | None = None) -> bytes:
    command = {"cmd": "initialize", "javascript": app, "app_context": None, "filename": "/tmp/app.js"}
    if acknowledged is not None:
        command["acknowledged"] = acknowledged
    return line(command)


def message(**msg: Any) -> bytes:
    return line({"cmd": "inbound-message", "msg": msg})


def reply(cmd_id: str) -> bytes:
    return line({"cmd": "log.info", "cmd_id": cmd_id, "reply": True, "success": True})


class Runner:
    """runner.js under node with its own stdin and stdout pipes, optionally non-blocking on its side."""

    def __init__(self, nonblocking_stdin: bool = False, nonblocking_stdout: bool = False) -> None:
        node = shutil.which("node")
        assert node is not None
        stdin_r, self.stdin = os.pipe()
        self.stdout, stdout_w = os.pipe()
        os.set_blocking(stdin_r, not nonblocking_stdin)
        os.set_blocking(stdout_w, not nonblocking_stdout)
        self.process = subprocess.Popen([node, runner_path()], stdin=stdin_r, stdout=stdout_w, env={})
        os.close(stdin_r)
        os.close(stdout_w)
        self.buffer = b""

    def write(self, *pieces: bytes, pause: float = 0.05) -> None:
        """Write each piece on its own, pausing between them so the runner reads them apart."""
        for piece in pieces:
            os.write(self.stdin, piece)
            time.sleep(pause)

    def read_line(self, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the runner within {timeout} s (have {self.buffer[:200]!r})"
            ready, _, _ = select.select([self.stdout], [], [], left)
            if ready:
                chunk = os.read(self.stdout, 1 << 20)
                assert chunk, f"the runner's output ended (have {self.buffer[:200]!r})"
                self.buffer += chunk
        text, _, self.buffer = self.buffer.partition(b"\n")
        result: dict[str, Any] = json.loads(text.decode("utf-8"))
        return result

    def close(self) -> int:
        """End its input and return its exit status."""
        os.close(self.stdin)
        code = self.process.wait(10)
        os.close(self.stdout)
        return code


@pytest.fixture
def runners() -> Any:
    started: list[Runner] = []

    def start(**options: bool) -> Runner:
        runner = Runner(**options)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        if runner.process.poll() is None:
            runner.process.kill()
            runner.process.wait()


def serve_one(runner: Runner) -> dict[str, Any]:
    """Answer one run's two requests; return the reply request."""
    request = runner.read_line()
    runner.write(reply(request["cmd_id"]))
    logged = runner.read_line()
    assert logged["msg"] == "Done."
    runner.write(reply(logged["cmd_id"]))
    assert runner.read_line()["cmd"] == "js.done"
    return request


def test_lines_cut_inside_a_multibyte_character(runners: Any) -> None:
    """A line delivered in pieces, one cut between the bytes of 'é' and one inside an emoji, arrives whole."""
    runner = runners()
    content = "héllo 🎉 wörld"
    data = initialize(ECHO_APP) + message(content=content)
    cuts = [len(initialize(ECHO_APP)) + data[len(initialize(ECHO_APP)):].index("é".encode()) + 1]
    cuts.append(data.index("🎉".encode()) + 2)
    pieces = [data[:cuts[0]], data[cuts[0]:cuts[1]], data[cuts[1]:]]
    runner.write(*pieces)
    request = serve_one(runner)
    assert (request["content"], request["length"]) == (content, len(content.encode("utf-16-le")) // 2)
    assert runner.close() == 0


def test_several_lines_in_one_write_and_one_line_over_many(runners: Any) -> None:
    """Two lines in one write, then a line written byte by byte: both runs answered."""
    runner = runners()
    runner.write(initialize(ECHO_APP) + message(content="one"))
    assert serve_one(runner)["content"] == "one"
    second = message(content="two")
    runner.write(*(second[i:i + 1] for i in range(len(second))), pause=0.001)
    assert serve_one(runner)["content"] == "two"
    assert runner.close() == 0


def test_a_line_longer_than_one_read(runners: Any) -> None:
    """A 1 MB message (many reads' worth) reaches the app intact."""
    runner = runners()
    content = "ü" * 500_000
    runner.write(initialize(ECHO_APP), message(content=content))
    request = serve_one(runner)
    assert request["content"] == content
    assert runner.close() == 0


def test_non_blocking_stdin_is_read_through_the_stream_reader(runners: Any) -> None:
    """Handed a non-blocking stdin, the runner still reads every line and sees the end of input."""
    runner = runners(nonblocking_stdin=True)
    time.sleep(0.3)  # let its first read find the pipe empty
    runner.write(initialize(ECHO_APP), message(content="late"))
    assert serve_one(runner)["content"] == "late"
    assert runner.close() == 0


def test_non_blocking_stdout_that_fills_up_loses_nothing(runners: Any) -> None:
    """A 1 MB request written to a non-blocking pipe nobody reads for a while arrives whole, then the run ends."""
    runner = runners(nonblocking_stdout=True)
    runner.write(initialize(BIG_APP), message(size=1_000_000))
    time.sleep(0.5)  # the pipe (64 KiB) fills and the runner has to wait
    request = runner.read_line()
    assert request["msg"] == "x" * 1_000_000
    runner.write(reply(request["cmd_id"]))
    assert runner.read_line()["msg"] == "Done."
    assert runner.close() == 0


def test_end_of_input_after_a_fatal_error_exits_1(runners: Any) -> None:
    """An app that fails to load is reported through the log; the end of input then exits with status 1."""
    runner = runners()
    runner.write(initialize("this is not javascript("))
    report = runner.read_line()
    assert report["cmd"] == "log.error" and "app failed to load" in report["msg"]
    assert runner.close() == 1


def test_done_does_not_wait_for_the_reply_to_its_log_line(runners: Any) -> None:
    """`api.done()` sends `log.info` "Done." and `js.done` back to back: a warm run saves a round trip."""
    runner = runners()
    runner.write(initialize(ECHO_APP) + message(content="one"))
    request = runner.read_line()
    runner.write(reply(request["cmd_id"]))
    logged = runner.read_line()
    assert (logged["cmd"], logged["msg"]) == ("log.info", "Done.")
    assert runner.read_line(timeout=5)["cmd"] == "js.done"
    # The log line's reply, arriving after the run ended, is ignored; the next run is served.
    runner.write(reply(logged["cmd_id"]), message(content="two"))
    assert serve_one(runner)["content"] == "two"
    assert runner.close() == 0


#: Awaits three log lines (the toolkit's pattern), then replies with what it saw, then ends the run.
AWAITING_APP = """
api.on_inbound_message = function (command) {
    var self = this, seen = [], returned = false;
    function logged(reply) {
        seen.push({sync: !returned, keys: Object.keys(reply).sort().join(','), cmd: reply.cmd,
                   success: reply.success, own: reply.cmd_id === ids[seen.length]});
        if (seen.length < 3) {
            ids.push(self.request('log.info', {msg: 'step ' + seen.length}, logged));
        } else {
            self.request('outbound.reply_to', {seen: seen}, function () { self.done(); });
        }
    }
    var ids = [self.request('log.info', {msg: 'step 0'}, logged)];
    returned = true;
};
"""

LOG_ACKS = {"log.info": "msg", "log.debug": "msg"}


def test_listed_requests_are_acknowledged_by_the_runner_without_a_round_trip(runners: Any) -> None:
    """With `acknowledged` in initialize, awaited log lines need no reply: the runner answers them itself, later."""
    runner = runners()
    runner.write(initialize(AWAITING_APP, LOG_ACKS) + message(content="one"))
    for step in range(3):
        logged = runner.read_line(timeout=5)
        assert (logged["cmd"], logged["msg"], logged["acknowledged"]) == ("log.info", f"step {step}", True)
    request = runner.read_line(timeout=5)
    assert request["cmd"] == "outbound.reply_to"
    # Each callback ran after request() returned, with the reply the worker would have sent.
    assert request["seen"] == [{"sync": False, "keys": "cmd,cmd_id,reply,success", "cmd": "log.info",
                                "success": True, "own": True}] * 3
    runner.write(reply(request["cmd_id"]))
    done_line = runner.read_line()
    assert (done_line["msg"], done_line["acknowledged"]) == ("Done.", True)
    assert runner.read_line()["cmd"] == "js.done"
    assert runner.close() == 0


#: Sends a log line without msg, a listed command with msg null and an unlisted one claiming acknowledgement.
UNACKNOWLEDGED_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.request('log.info', {}, function (r) {
        self.request('log.debug', {msg: null}, function () {
            self.request('kv.set', {key: 'k', value: 1, acknowledged: true}, function () { self.done(); });
        });
    });
};
"""


def test_requests_without_their_field_or_unlisted_wait_for_the_worker(runners: Any) -> None:
    """Only a listed command carrying its field is acknowledged; an app cannot mark other requests itself."""
    runner = runners()
    runner.write(initialize(UNACKNOWLEDGED_APP, LOG_ACKS) + message(content="one"))
    for cmd in ("log.info", "log.debug", "kv.set"):
        request = runner.read_line(timeout=5)
        assert request["cmd"] == cmd and "acknowledged" not in request
        runner.write(reply(request["cmd_id"]))
    assert runner.read_line()["msg"] == "Done."
    assert runner.read_line()["cmd"] == "js.done"
    assert runner.close() == 0


@pytest.mark.parametrize("acknowledged", [None, [], "log.info", {"log.info": 1}, {"log.info": ""}])
def test_no_or_malformed_acknowledged_means_every_request_waits(runners: Any, acknowledged: Any) -> None:
    """Without a well-formed `acknowledged` (a worker before 1.1, a broken one) every log line waits for its reply."""
    runner = runners()
    app_init = line({"cmd": "initialize", "javascript": AWAITING_APP, "app_context": None,
                     "filename": "/tmp/app.js", "acknowledged": acknowledged})
    runner.write(app_init + message(content="one"))
    for step in range(3):
        logged = runner.read_line(timeout=5)
        assert logged["msg"] == f"step {step}" and "acknowledged" not in logged
        runner.write(reply(logged["cmd_id"]))
    request = runner.read_line(timeout=5)
    assert [seen["sync"] for seen in request["seen"]] == [False] * 3
    runner.write(reply(request["cmd_id"]))
    assert runner.read_line()["msg"] == "Done."
    assert runner.read_line()["cmd"] == "js.done"
    assert runner.close() == 0


#: Asks config.get for the message's key, then replies with what it got and when, then ends the run.
CONFIG_APP = """
api.on_inbound_message = function (command) {
    var self = this, returned = false;
    var id = self.request('config.get', {key: command.msg.key}, function (r) {
        self.request('outbound.reply_to', {got: r, sync: !returned, own: r.cmd_id === id},
                     function () { self.done(); });
    });
    returned = true;
};
"""

FIXED = {"config.get": "key"}


def config_initialize(fixed: Any = FIXED) -> bytes:
    return line({"cmd": "initialize", "javascript": CONFIG_APP, "app_context": None, "filename": "/tmp/app.js",
                 "fixed": fixed})


def config_reply(cmd_id: str, **fields: Any) -> bytes:
    return line({"cmd": "config.get", "cmd_id": cmd_id, "reply": True, **fields})


def finish_run(runner: Runner) -> dict[str, Any]:
    """Answer the run's outbound request and read its end; return the outbound request."""
    request = runner.read_line()
    assert request["cmd"] == "outbound.reply_to"
    runner.write(reply(request["cmd_id"]))
    assert runner.read_line()["msg"] == "Done."
    assert runner.read_line()["cmd"] == "js.done"
    return request


def test_a_fixed_reply_is_kept_and_given_again_without_a_request(runners: Any) -> None:
    """With `fixed`, the first successful config.get of a key goes to the worker; later runs get its reply at once."""
    runner = runners()
    runner.write(config_initialize() + message(key="config"))
    asked = runner.read_line()
    assert (asked["cmd"], asked["key"]) == ("config.get", "config")
    runner.write(config_reply(asked["cmd_id"], success=True, value='{"name": "Tea"}'))
    first = finish_run(runner)["got"]
    for _ in range(2):
        runner.write(message(key="config"))
        request = finish_run(runner)
        # No config.get line: the first line of the run is its reply request, and the app got
        # the worker's reply (its own new cmd_id), in a later turn, as from the worker.
        assert (request["sync"], request["own"]) == (False, True)
        got = request["got"]
        assert got.pop("cmd_id") != first["cmd_id"]
        assert got == {"cmd": "config.get", "reply": True, "success": True, "value": '{"name": "Tea"}'}
    # Another key is asked of the worker.
    runner.write(message(key="translation.fr"))
    asked = runner.read_line()
    assert (asked["cmd"], asked["key"]) == ("config.get", "translation.fr")
    runner.write(config_reply(asked["cmd_id"], success=True, value=None))
    assert finish_run(runner)["got"]["value"] is None
    assert runner.close() == 0


def test_a_failed_or_too_big_reply_is_not_kept(runners: Any) -> None:
    """A failed reply, and one beyond the runner's 1 MiB for kept replies, are asked for again in the next run."""
    runner = runners()
    runner.write(config_initialize())
    for fields in ({"success": False, "reason": "not now"}, {"success": True, "value": "x" * (1024 * 1024 + 1)}):
        for _ in range(2):
            runner.write(message(key="config"))
            asked = runner.read_line()
            assert asked["cmd"] == "config.get"
            runner.write(config_reply(asked["cmd_id"], **fields))
            assert finish_run(runner)["got"]["success"] is fields["success"]
    assert runner.close() == 0


@pytest.mark.parametrize("fixed", [None, [], "config.get", {"config.get": 1}, {"config.get": ""}])
def test_no_or_malformed_fixed_means_every_request_is_asked(runners: Any, fixed: Any) -> None:
    """Without a well-formed `fixed` (a worker before 1.3, a broken one) every config.get goes to the worker."""
    runner = runners()
    runner.write(config_initialize(fixed))
    for _ in range(2):
        runner.write(message(key="config"))
        asked = runner.read_line()
        assert asked["cmd"] == "config.get"
        runner.write(config_reply(asked["cmd_id"], success=True, value="v"))
        assert finish_run(runner)["got"]["value"] == "v"
    assert runner.close() == 0


#: Asks config.get for each key the message lists, one after the other, then replies with the values.
KEYS_APP = """
api.on_inbound_message = function (command) {
    var self = this, keys = command.msg.keys, values = [];
    function next() {
        if (values.length === keys.length) {
            self.request('outbound.reply_to', {values: values}, function () { self.done(); });
            return;
        }
        self.request('config.get', {key: keys[values.length]}, function (r) {
            values.push(r.success ? r.value : 'failed: ' + r.reason);
            next();
        });
    }
    next();
};
"""


def config_value(key: str) -> str | None:
    """What the test's worker answers for a key: null for some, as the config resource does for unknown keys."""
    return None if len(key) % 3 == 0 else f"v:{key}"


def test_kept_replies_always_match_what_the_worker_would_answer(runners: Any) -> None:
    """Hypothesis: whatever keys runs ask for, in any order and repeated, every run gets what the worker would
    answer, and the worker is asked for each key once in the child's life (one child serves every example)."""
    runner = runners()
    runner.write(line({"cmd": "initialize", "javascript": KEYS_APP, "app_context": None,
                       "filename": "/tmp/app.js", "fixed": FIXED}))
    asked: list[str] = []

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.text(max_size=12), max_size=6))
    def run(keys: list[str]) -> None:
        runner.write(message(keys=keys))
        while True:
            request = runner.read_line()
            if request["cmd"] != "config.get":
                break
            asked.append(request["key"])
            runner.write(config_reply(request["cmd_id"], success=True, value=config_value(request["key"])))
        assert request["values"] == [config_value(key) for key in keys]
        runner.write(reply(request["cmd_id"]))
        assert runner.read_line()["msg"] == "Done."
        assert runner.read_line()["cmd"] == "js.done"
        assert len(asked) == len(set(asked)), asked

    run()
    assert runner.close() == 0


#: Claims a fatal error of its own in a request; then throws from its handler.
FATAL_CLAIM_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    if (command.msg.content === 'claim') {
        self.request('log.error', {msg: 'not really', fatal: true}, function () { self.done(); });
        return;
    }
    throw new Error('boom');
};
"""


def test_only_the_runner_marks_a_line_fatal(runners: Any) -> None:
    """An app's `fatal: true` is dropped from its request; the runner's own report of what the app threw carries it."""
    runner = runners()
    runner.write(initialize(FATAL_CLAIM_APP) + message(content="claim"))
    claimed = runner.read_line()
    assert (claimed["cmd"], claimed["msg"]) == ("log.error", "not really") and "fatal" not in claimed
    runner.write(reply(claimed["cmd_id"]))
    assert runner.read_line()["msg"] == "Done."
    assert runner.read_line()["cmd"] == "js.done"
    runner.write(message(content="throw"))
    report = runner.read_line()
    assert (report["cmd"], report["fatal"]) == ("log.error", True)
    assert "app handler for inbound-message failed" in report["msg"] and "boom" in report["msg"]
    runner.write(line({"cmd": "log.error", "cmd_id": report["cmd_id"], "reply": True, "success": True}))
    assert runner.close() == 1
