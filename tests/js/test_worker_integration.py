"""JavaScript workers running real Node.js children (vxsandbox_js.worker and the runner script)."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core.hookspecs import hookimpl
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message
from vxsandbox_js import JsFileSandbox, JsSandbox, StandaloneJsFileSandbox

from .helpers import EXAMPLES, SEED_APP, RecordingLog, js_config, make_worker, started

pytestmark = pytest.mark.node


class EndRecorder:
    """A plugin keeping how every sandbox run ended and every metric fired."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.metrics: list[tuple[str, str, str, float, str]] = []

    @hookimpl
    def run_ended(self, api: Any, result: Any) -> None:
        self.results.append(result)

    @hookimpl
    def metric_fired(self, sandbox_id: str, store: str, metric: str, value: float, agg: str) -> None:
        self.metrics.append((sandbox_id, store, metric, value, agg))


#: An app whose behaviour depends on the message content, so one worker shows every way a run can end.
MISBEHAVING_APP = """
api.on_inbound_message = function(command) {
    var what = command.msg.content;
    if (what === 'throw') { throw new Error('app blew up on purpose'); }
    if (what === 'reject') { Promise.reject(new Error('rejected on purpose')); return; }
    if (what === 'async-throw') { setTimeout(function() { throw new TypeError('late failure'); }, 1); return; }
    if (what === 'hang') { return; }
    if (what === 'unknown') { this.request('nosuch.thing', {}, function() {}); return; }
    if (what === 'bomb') { var a = []; while (true) { a.push(new Array(100000).fill(1)); } }
    this.log_info('handled ' + what, function() { this.done(); });
};
"""


class JsSandboxTests(TestCase):

    def worker(self, javascript: str, cls: type = JsSandbox, **extra: Any) -> Any:
        self.ends = EndRecorder()
        self.broker = RecordingBroker()
        config = js_config(javascript, **extra)
        w = cls(config, broker=self.broker, hooks=hooks_with(self.ends))
        return w

    def log_of(self, worker: Any) -> RecordingLog:
        return worker.resources.resources["log"]

    async def test_seed_example_logs_success(self) -> None:
        """The seed's example app logs 'Log successful: true' and ends its run successfully."""
        w = self.worker(SEED_APP)
        await started(self, w)
        outcome = await w.process_message(make_user_message())
        assert outcome == "ok"
        messages = self.log_of(w).messages()
        assert "From command: inbound-message" in messages
        assert "Log successful: true" in messages
        assert messages[-1] == "Done."
        assert self.ends.results[0].finished is True

    async def test_app_context_gives_extra_globals(self) -> None:
        """app_context ``{path: require('path')}`` makes ``path`` usable by the app."""
        app = """
        api.on_inbound_message = function(command) {
            this.log_info('joined ' + path.join('a', 'b', '..', 'c'), function() { this.done(); });
        };
        """
        w = self.worker(app, app_context="{path: require('path')}")
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        assert "joined a/c" in self.log_of(w).messages()

    async def test_children_collect_garbage_on_their_own_thread(self) -> None:
        """Every child runs with --single-threaded-gc (no V8 GC helper threads: many children share a core)."""
        app = """
        api.on_inbound_message = function(command) {
            this.log_info('flags ' + flags.join(' '), function() { this.done(); });
        };
        """
        w = self.worker(app, app_context="{flags: process.execArgv}")
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        [line] = [m for m in self.log_of(w).messages() if m.startswith("flags ")]
        assert "--single-threaded-gc" in line.split()
        assert any(flag.startswith("--max-old-space-size=") for flag in line.split())

    async def test_without_app_context_there_is_no_require(self) -> None:
        """The app's globals hold no ``require`` or ``process`` unless app_context gives them."""
        app = """
        api.on_inbound_message = function(command) {
            this.log_info(typeof require + ' ' + typeof process, function() { this.done(); });
        };
        """
        w = self.worker(app)
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        assert "undefined undefined" in self.log_of(w).messages()

    async def test_failures_end_cleanly_and_the_next_message_is_processed(self) -> None:
        """A throw, a rejection, a late throw, a hang and an unknown resource each end with a reason."""
        w = self.worker(MISBEHAVING_APP, timeout=1.5)
        await started(self, w)
        log = self.log_of(w)
        outcomes = {}
        for what in ("throw", "reject", "async-throw", "hang", "unknown", "fine"):
            began = time.monotonic()
            outcomes[what] = (await w.process_message(make_user_message(content=what)),
                              time.monotonic() - began)
        assert {k: v[0] for k, v in outcomes.items()} == {
            "throw": "error", "reject": "error", "async-throw": "error", "hang": "error",
            "unknown": "error", "fine": "ok"}
        # Only the hang waits for the timeout; the other failures end at once.
        assert all(d < 1.2 for k, (_, d) in outcomes.items() if k != "hang")
        errors = log.messages(logging.ERROR)
        assert any("uncaught" not in e and "app blew up on purpose" in e for e in errors)
        assert any("unhandled promise rejection in app" in e and "rejected on purpose" in e for e in errors)
        assert any("uncaught exception in app" in e and "TypeError: late failure" in e for e in errors)
        assert any("no resource named 'nosuch'" in e for e in errors)
        assert any("killed after the 1.5s timeout: it did not call api.done()" in e for e in errors)
        # The stack trace points into the app, not the runner.
        thrown = next(e for e in errors if "app blew up on purpose" in e)
        assert "app.js:4" in thrown and "runner.js" not in thrown
        reasons = [(r.kill_reason, r.exit_code) for r in self.ends.results]
        assert reasons == [(None, 1), (None, 1), (None, 1), ("timeout", None), ("unknown resource", None),
                           (None, None)]
        assert "handled fine" in log.messages()

    async def test_memory_bomb_ends_quickly(self) -> None:
        """An app that allocates without end hits the V8 heap bound and dies within seconds."""
        w = self.worker(MISBEHAVING_APP, timeout=20)
        await started(self, w)
        began = time.monotonic()
        assert await w.process_message(make_user_message(content="bomb")) == "error"
        assert time.monotonic() - began < 10
        assert self.ends.results[0].kill_reason is None
        assert any("heap" in m.lower() for m in self.log_of(w).messages(logging.ERROR))

    async def test_syntax_error_is_reported(self) -> None:
        """An app that does not compile ends its run with the syntax error in the log."""
        w = self.worker("api.on_inbound_message = function( {")
        await started(self, w)
        assert await w.process_message(make_user_message()) == "error"
        assert any("app failed to load" in m and "SyntaxError" in m for m in self.log_of(w).messages())

    async def test_app_without_handler_ends_its_run(self) -> None:
        """A command the app has no handler for is logged and the run ends rather than timing out."""
        w = self.worker("var nothing = true;", timeout=5)
        await started(self, w)
        began = time.monotonic()
        assert await w.process_message(make_user_message()) == "ok"
        assert time.monotonic() - began < 2
        assert any("no handler for command \"inbound-message\"" in m for m in self.log_of(w).messages())

    async def test_console_goes_to_the_log(self) -> None:
        """console.log in the app becomes a log line instead of corrupting the protocol on stdout."""
        app = """
        api.on_inbound_message = function(command) {
            console.log('hello %s', 'console', {a: 1});
            console.error('bad thing');
            this.done();
        };
        """
        w = self.worker(app)
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        lines = self.log_of(w).lines
        assert ("tenant-1", logging.INFO, "hello console { a: 1 }") in lines
        assert ("tenant-1", logging.ERROR, "bad thing") in lines

    async def test_non_ascii_survives_both_ways(self) -> None:
        """Non-ASCII content reaches the app intact and its reply reaches the broker intact."""
        app = """
        api.on_inbound_message = function(command) {
            var msg = command.msg;
            this.request('outbound.reply_to', {
                in_reply_to: msg.message_id, content: msg.content + ' → ☕ ok', continue_session: true
            }, function(reply) {
                this.log_info('length ' + msg.content.length + ' ' + reply.success, function() { this.done(); });
            });
        };
        """
        w = self.worker(app, sandbox={"outbound": {"cls": "outbound"}})
        await started(self, w)
        text = "héllo wörld 你好 🎉"
        assert await w.process_message(make_user_message(content=text)) == "ok"
        (published,) = self.broker.messages("test_transport.outbound")
        assert published["content"] == text + " → ☕ ok"
        assert f"length {len(text.encode('utf-16-le')) // 2} true" in self.log_of(w).messages()

    async def test_config_and_metrics_resources(self) -> None:
        """An app reads JSON config through ``config.get`` and fires metrics that reach the hook."""
        app = """
        api.on_inbound_message = function(command) {
            this.request('config.get', {key: 'config'}, function(reply) {
                var conf = JSON.parse(reply.value);
                this.request('metrics.fire', {store: conf.name, metric: 'visits', value: 2, agg: 'sum'},
                    function(r2) {
                        this.request('config.get', {key: 'missing'}, function(r3) {
                            this.log_info([conf.name, r2.success, r3.success, r3.value === null].join('|'),
                                          function() { this.done(); });
                        });
                    });
            });
        };
        """
        w = self.worker(app, sandbox={
            "config": {"cls": "config", "values": {"config": {"name": "tea"}}},
            "metrics": {"cls": "metrics"}})
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        assert "tea|true|true|true" in self.log_of(w).messages()
        assert self.ends.metrics == [("tenant-1", "tea", "visits", 2.0, "sum")]

    async def test_events_reach_on_inbound_event(self) -> None:
        """An event is handed to ``api.on_inbound_event``."""
        from vxsandbox_core.message import TransportEvent

        app = """
        api.on_inbound_event = function(command) {
            this.log_info('event ' + command.msg.event_type, function() { this.done(); });
        };
        """
        w = self.worker(app)
        await started(self, w)
        event = TransportEvent({"event_type": "ack", "user_message_id": "abc", "sent_message_id": "abc",
                                "transport_name": "test_transport"})
        assert await w.process_event(event) == "ok"
        assert "event ack" in self.log_of(w).messages()

    async def test_explicit_args_replace_the_runner(self) -> None:
        """``args`` given in the config run instead of the runner, without hardening flags."""
        w = self.worker("ignored", args=["-e", "process.exit(0)"])
        await started(self, w)
        assert await w.process_message(make_user_message()) == "ok"
        assert self.ends.results[0].exit_code == 0


#: the file the permission test tries to write (only written when the model is off)
WRITTEN = f"/tmp/vxsandbox-permission-test-{os.getpid()}"


class PermissionModelTests(TestCase):

    # The message content lists the attempts to make, so the run without the model can skip the
    # worker thread (a second V8 isolate does not fit the address-space rlimit).
    APP = """
    api.on_inbound_message = function(command) {
        var fs = require('fs');
        var attempts = {
            'read-passwd': function() { fs.readFileSync('/etc/passwd'); },
            'child-process': function() { require('child_process').execFileSync('/bin/true'); },
            'worker-thread': function() { new (require('worker_threads').Worker)('1', {eval: true}); },
            'write-file': function() { fs.writeFileSync('WRITTEN_PATH', 'x'); },
        };
        var results = command.msg.content.split(',').map(function(name) {
            try { attempts[name](); return name + ':allowed'; }
            catch (e) { return name + ':' + (e.code || e.name); }
        });
        this.log_info(results.join(' '), function() { this.done(); });
    };
    """.replace("WRITTEN_PATH", WRITTEN)

    async def run_app(self, attempts: str, **extra: Any) -> tuple[Any, str]:
        w = make_worker(JsSandbox, js_config(self.APP, app_context="{require: require}", **extra))
        await started(self, w)
        assert await w.process_message(make_user_message(content=attempts)) == "ok"
        line = next(m for m in w.resources.resources["log"].messages() if m.startswith("read-passwd"))
        return w, line

    async def test_permission_model_blocks_reads_processes_threads_and_writes(self) -> None:
        """Under Node's permission model the app cannot read /etc/passwd, spawn, start threads or write."""
        w, line = await self.run_app("read-passwd,child-process,worker-thread,write-file")
        version = w.node_version
        if version.permission_flag is None:
            pytest.skip(f"Node {version} has no permission model (Node 20 or newer has one)")
        print(f"permission model checked on Node {version} with {version.permission_flag}")
        assert line == ("read-passwd:ERR_ACCESS_DENIED child-process:ERR_ACCESS_DENIED "
                        "worker-thread:ERR_ACCESS_DENIED write-file:ERR_ACCESS_DENIED"), f"Node {version}: {line}"
        assert not os.path.exists(WRITTEN)

    async def test_without_the_permission_model_the_same_app_can_read(self) -> None:
        """With ``node_permissions: false`` and no jail the same app reads /etc/passwd: the model is what blocks it."""
        _, line = await self.run_app("read-passwd,child-process", node_permissions=False, isolation="none")
        assert line == "read-passwd:allowed child-process:allowed"


class FileSandboxTests(TestCase):

    def write_app(self, source: str) -> str:
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "node_modules", "greeter"))
        with open(os.path.join(folder, "node_modules", "greeter", "index.js"), "w") as f:
            f.write("module.exports = function(n) { return 'hi ' + n; };\n")
        path = os.path.join(folder, "app.js")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        return path

    async def test_app_requires_its_own_node_modules(self) -> None:
        """A file-based app with ``require`` in its context loads a module from node_modules next to it."""
        path = self.write_app("""
        var greet = require('greeter');
        api.on_inbound_message = function(command) {
            this.log_info(greet(command.msg.from_addr), function() { this.done(); });
        };
        """)
        config = js_config(javascript_file=path, app_context="{require: require}")
        w = make_worker(JsFileSandbox, config)
        await started(self, w)
        assert await w.process_message(make_user_message(from_addr="+27000")) == "ok"
        assert "hi +27000" in w.resources.resources["log"].messages()

    async def test_edited_file_takes_effect(self) -> None:
        """The file is read for every run, so an edited app is picked up without a restart."""
        path = self.write_app("api.on_inbound_message = function() { this.log_info('v1', this.done); };")
        w = make_worker(JsFileSandbox, js_config(javascript_file=path))
        await started(self, w)
        await w.process_message(make_user_message())
        with open(path, "w") as f:
            f.write("api.on_inbound_message = function() { this.log_info('v2', this.done); };")
        await w.process_message(make_user_message())
        messages = w.resources.resources["log"].messages()
        assert messages.index("v1") < messages.index("v2")

    async def test_standalone_takes_sandbox_id_from_config(self) -> None:
        """js-standalone ignores a message's sandbox_id and runs as the configured tenant."""
        path = self.write_app("api.on_inbound_message = function() { this.log_info('x', this.done); };")
        w = make_worker(StandaloneJsFileSandbox, js_config(javascript_file=path, sandbox_id="solo"))
        await started(self, w)
        assert await w.process_message(make_user_message(sandbox_id="someone-else")) == "ok"
        assert {sid for sid, _, _ in w.resources.resources["log"].lines} == {"solo"}

    async def test_vumigo_app_plays_a_session_on_memory_kv(self) -> None:
        """The example vumigo_v02 app plays menu, choice and end text with its state in the memory kv."""
        app = os.path.join(EXAMPLES, "vumigo_app", "app.js")
        if not os.path.isdir(os.path.join(EXAMPLES, "vumigo_app", "node_modules", "vumigo_v02")):
            pytest.fail("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")
        broker = RecordingBroker()
        config = js_config(javascript_file=app, app_context="{require: require}", transport_name="ussd",
                           sandbox={"kv": {"cls": "kv", "backend": "memory"}, "outbound": {"cls": "outbound"},
                                    "config": {"cls": "config", "values": {"config": {"name": "Tea Time"}}},
                                    "metrics": {"cls": "metrics"}})
        w = make_worker(JsFileSandbox, config, broker)
        await started(self, w)
        for content, event in ((None, "new"), ("1", "resume"), ("2", "resume")):
            msg = make_user_message(content=content, session_event=event, transport_name="ussd")
            assert await w.process_message(msg) == "ok"
        replies = [(m["content"], m["session_event"]) for m in broker.messages("ussd.outbound")]
        assert replies == [
            ("Welcome to Tea Time! What would you like?\n1. Tea\n2. Coffee", None),
            ("Milk with your tea?\n1. Yes please\n2. No thanks", None),
            ("One tea black coming up. Thank you!", "close"),
        ]
        assert json.loads(json.dumps(replies))  # plain JSON all the way
