"""Tests for preloading: children load the app's modules before a message, and no tenant's state crosses."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsFileSandbox

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

#: Announces its load on stderr, counts its loads in the process, and keeps the last content it was given.
LIB = """
process.stderr.write('lib loaded\\n');
global.libLoads = (global.libLoads || 0) + 1;
exports.loads = global.libLoads;
exports.last = 'none';
"""
#: Logs the library's load count and the content the previous message of this process left in it.
APP = """
var lib = require('lib');
api.on_inbound_message = function (command) {
    var self = this, previous = lib.last;
    lib.last = command.msg.content;
    self.log_info('loads ' + lib.loads + ' previous ' + previous, function () { self.done(); });
};
"""


def make_app(root: str) -> str:
    os.makedirs(os.path.join(root, "node_modules", "lib"))
    with open(os.path.join(root, "node_modules", "lib", "index.js"), "w") as f:
        f.write(LIB)
    path = os.path.join(root, "app.js")
    with open(path, "w") as f:
        f.write(APP)
    return path


def worker_for(test: TestCase, app_path: str, **extra):
    config = js_config(worker="js-file", javascript_file=app_path, app_context="{require: require}", **extra)
    worker = make_worker(JsFileSandbox, config)
    test.addCleanup(worker.teardown)
    return worker


class PreloadTests(TestCase):
    def test_the_runner_loads_the_module_before_any_input(self):
        """A child started with the worker's arguments loads the app's module while its stdin is still silent."""
        app_path = make_app(self.mktemp())
        worker = worker_for(self, app_path)
        argv = [worker.executable, *worker.sandbox_args(worker._template_api())]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={})
        try:
            # Nothing has been written to the child: the line can only come from preloading.
            self.assertTrue(select.select([child.stderr], [], [], 30)[0], "the child loaded nothing before input")
            self.assertEqual(child.stderr.readline(), b"lib loaded\n")
            init = {"cmd": "initialize", "javascript": APP, "app_context": "{require: require}", "filename": app_path}
            msg = {"cmd": "inbound-message", "msg": {"content": "x"}}
            child.stdin.write((json.dumps(init) + "\n" + json.dumps(msg) + "\n").encode())
            child.stdin.flush()
            request = json.loads(child.stdout.readline())
            self.assertEqual((request["cmd"], request["msg"]), ("log.info", "loads 1 previous none"))
        finally:
            child.kill()
            child.communicate()

    async def test_a_spare_has_the_module_loaded_before_the_first_message(self):
        """A prefork spare loads the app's module while it waits, and the message finds it loaded once."""
        worker = worker_for(self, make_app(self.mktemp()), prefork=1)
        await worker.setup()
        spare = worker.pool.spares[0]
        deadline = time.monotonic() + 30
        # The spare's only output before any run is the module's load line (read and set aside).
        while spare._prestart_received < len(b"lib loaded\n"):
            self.assertLess(time.monotonic(), deadline, "the spare never loaded the module")
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(await worker.process_message(make_user_message(content="a", sandbox_id="t1")), "ok")
        self.assertIn("loads 1 previous none", worker.resources.resources["log"].messages())
        self.assertEqual(spare.first_api.sandbox_id, "t1")

    async def test_module_state_never_crosses_tenants(self):
        """What one tenant leaves in a preloaded module stays in its own warm child; other tenants never see it."""
        worker = worker_for(self, make_app(self.mktemp()), prefork=1, messages_per_process=10)
        await worker.setup()
        for sandbox_id, content in (("t1", "secret-of-t1"), ("t2", "t2-first"), ("t1", "again"), ("t3", "t3")):
            self.assertEqual(await worker.process_message(make_user_message(content=content, sandbox_id=sandbox_id)),
                             "ok")
        lines = [m for m in worker.resources.resources["log"].messages() if m.startswith("loads ")]
        self.assertEqual(lines, ["loads 1 previous none", "loads 1 previous none",
                                 "loads 1 previous secret-of-t1", "loads 1 previous none"])


#: An app that says which version of its code ran.
VERSIONED_APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info('version %s', function () { self.done(); });
};
"""
#: Trusted context that says on stderr when it is evaluated (a spare's only output before a run).
LOUD_CONTEXT = "(require('process').stderr.write('context evaluated\\n'), {require: require})"


async def until_prestart_output(spare, size: int) -> None:
    deadline = time.monotonic() + 30
    while spare._prestart_received < size:
        assert time.monotonic() < deadline, "the spare said nothing before its first message"
        await deferLater(reactor, 0.02, lambda: None)


class PrepareTests(TestCase):
    def app(self, source: str) -> str:
        root = self.mktemp()
        os.makedirs(root)
        path = os.path.join(root, "app.js")
        with open(path, "w") as f:
            f.write(source)
        return path

    async def test_a_spare_loads_the_app_before_its_first_message(self):
        """A prefork spare compiles the app and evaluates its context while no tenant is known yet."""
        worker = worker_for(self, self.app(VERSIONED_APP.replace("%s", "one")), prefork=1)
        worker.config.app_context = LOUD_CONTEXT
        await worker.setup()
        spare = worker.pool.spares[0]
        await until_prestart_output(spare, len(b"context evaluated\n"))
        self.assertIsNone(spare.first_api)
        self.assertEqual(await worker.process_message(make_user_message(content="a", sandbox_id="t1")), "ok")
        self.assertIn("version one", worker.resources.resources["log"].messages())
        self.assertEqual(spare.first_api.sandbox_id, "t1")

    async def test_a_spare_prepared_with_old_code_runs_the_code_of_its_first_message(self):
        """An app edited after the spare prepared it runs as edited: the spare loads what initialize names."""
        path = self.app(VERSIONED_APP.replace("%s", "one"))
        worker = worker_for(self, path, prefork=1)
        worker.config.app_context = LOUD_CONTEXT
        await worker.setup()
        await until_prestart_output(worker.pool.spares[0], len(b"context evaluated\n"))
        with open(path, "w") as f:
            f.write(VERSIONED_APP.replace("%s", "two"))
        self.assertEqual(await worker.process_message(make_user_message(content="a", sandbox_id="t1")), "ok")
        lines = [m for m in worker.resources.resources["log"].messages() if m.startswith("version ")]
        self.assertEqual(lines, ["version two"])

    async def test_a_broken_app_leaves_spares_waiting_and_fails_its_run(self):
        """A spare that cannot load the app stays up (no restart loop) and the run reports the load error."""
        worker = worker_for(self, self.app("api.on_inbound_message = function ( {"), prefork=1)
        await worker.setup()
        spare = worker.pool.spares[0]
        await deferLater(reactor, 1.5, lambda: None)
        self.assertEqual((worker.pool.spawned, spare.ended), (1, False))
        self.assertEqual(await worker.process_message(make_user_message(content="a", sandbox_id="t1")), "error")
        errors = [m for m in worker.resources.resources["log"].messages() if m.startswith("app failed to load")]
        self.assertEqual(len(errors), 1, worker.resources.resources["log"].messages())
        self.assertIn("SyntaxError", errors[0])
