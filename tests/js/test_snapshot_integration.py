"""Startup snapshots (on by default): children start with the app's modules loaded, and a snapshot that is
not what was made (an edited module, a damaged blob) is never used."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core import hookimpl
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message
from vxsandbox_js import JsFileSandbox
from vxsandbox_js import snapshot as snapshot_module
from vxsandbox_js.snapshot import CHECK_INTERVAL

from .helpers import EXAMPLES, js_config

pytestmark = pytest.mark.node

#: A package as toolkits are written: a `main` in a subfolder, a relative require, a JSON file, a built-in
#: module, and state kept in the module (a count of the greetings it made in this process).
MAIN = """
var util = require('util');
var words = require('./words.json');
var state = {count: 0};
exports.hello = function (name) {
    state.count += 1;
    return util.format('%s, %s #%d', words.hello, name, state.count);
};
"""
APP = """
var greet = require('greet');
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info(greet.hello(command.msg.content), function () { self.done(); });
};
"""
#: long enough ago that the files count as settled (see vxsandbox_js.reads.SETTLED_NS)
LONG_AGO = 60


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    then = time.time() - LONG_AGO
    os.utime(path, (then, then))


class Argv:
    """Records each child's command line."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    @hookimpl
    def child_started(self, api, pid):
        self.argvs.append(list(api.child.argv))

    def from_snapshot(self) -> list[bool]:
        return ["--snapshot-blob" in argv for argv in self.argvs]


class SnapshotTests(TestCase):
    def make_app(self, package: dict | None = None) -> str:
        root = os.path.abspath(self.mktemp())
        write(os.path.join(root, "node_modules", "greet", "package.json"),
              json.dumps(package or {"name": "greet", "main": "lib/main.js"}))
        write(os.path.join(root, "node_modules", "greet", "lib", "main.js"), MAIN)
        write(os.path.join(root, "node_modules", "greet", "lib", "words.json"), '{"hello": "Hello"}')
        write(os.path.join(root, "app.js"), APP)
        return root

    async def worker(self, root: str, **extra):
        self.argv = Argv()
        config = js_config(worker="js-file", javascript_file=os.path.join(root, "app.js"),
                           **{"app_context": "{require: require}", "snapshot": True, **extra})
        worker = JsFileSandbox(config, broker=RecordingBroker(), hooks=hooks_with(self.argv))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        await worker.setup()
        return worker

    async def send(self, worker, content: str, sandbox_id: str = "tenant-1") -> str:
        return await worker.process_message(make_user_message(content=content, sandbox_id=sandbox_id))

    def said(self, worker) -> list[str]:
        return [m for m in worker.resources.resources["log"].messages() if "#" in m]

    async def test_children_start_from_the_snapshot_with_the_modules_loaded(self):
        """Once made, every child starts from it; each is a fresh process, so no tenant's module state crosses."""
        worker = await self.worker(self.make_app())
        snapshot = await worker.snapshot_ready()
        self.assertIsNotNone(snapshot)
        self.assertEqual(sorted(os.path.basename(f) for f, _ in snapshot.files), ["main.js", "words.json"])
        self.assertEqual(os.stat(snapshot.path).st_mode & 0o777, 0o644)
        for content, tenant in (("a", "tenant-1"), ("b", "tenant-2"), ("c", "tenant-1")):
            self.assertEqual(await self.send(worker, content, tenant), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1", "Hello, b #1", "Hello, c #1"])
        self.assertEqual(self.argv.from_snapshot()[-3:], [True, True, True])

    async def test_a_warm_child_from_the_snapshot_serves_many_messages(self):
        """A warm child started from it keeps its modules (and their state) across its own messages only."""
        worker = await self.worker(self.make_app(), messages_per_process=10)
        await worker.snapshot_ready()
        for content in ("a", "b"):
            self.assertEqual(await self.send(worker, content), "ok")
        self.assertEqual(await self.send(worker, "c", "tenant-2"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1", "Hello, b #2", "Hello, c #1"])
        self.assertEqual(self.argv.from_snapshot(), [True, True])

    async def test_a_warm_child_started_before_the_snapshot_goes_on_serving(self):
        """A tenant's warm child started while the snapshot was being made is reused once it is ready: the two
        ways to start a child make the same child, so no second one is started beside it."""
        worker = await self.worker(self.make_app(), messages_per_process=10)
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertIsNotNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "b"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1", "Hello, b #2"])
        self.assertEqual(self.argv.from_snapshot(), [False])
        # A new tenant's child starts from it.
        self.assertEqual(await self.send(worker, "c", "tenant-2"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [False, True])

    async def test_an_edited_module_makes_the_snapshot_stale(self):
        """A module changed after the snapshot was made: the old blob is deleted, never used; a new one is made."""
        root = self.make_app()
        worker = await self.worker(root)
        old = await worker.snapshot_ready()
        write(os.path.join(root, "node_modules", "greet", "lib", "words.json"), '{"hello": "Howzit"}')
        await deferLater(reactor, CHECK_INTERVAL + 0.1, lambda: None)
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertIn("is stale", logs.output[0])
        self.assertFalse(os.path.exists(old.path))
        new = await worker.snapshot_ready()
        self.assertIsNotNone(new)
        self.assertEqual(await self.send(worker, "b"), "ok")
        self.assertEqual(self.said(worker), ["Howzit, a #1", "Howzit, b #1"])
        self.assertEqual(self.argv.from_snapshot(), [False, True])

    async def test_a_damaged_blob_is_never_used(self):
        """A blob changed on disk after it was checked (overwritten, cut short) is deleted and not started from."""
        worker = await self.worker(self.make_app())
        snapshot = await worker.snapshot_ready()
        with open(snapshot.path, "r+b") as f:
            f.seek(4096)
            f.write(b"\0" * 4096)
        await deferLater(reactor, CHECK_INTERVAL + 0.1, lambda: None)
        with self.assertLogs("vxsandbox.worker", "WARNING"):
            self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1"])
        self.assertEqual(self.argv.from_snapshot(), [False])
        self.assertFalse(os.path.exists(snapshot.path))

    async def test_a_package_the_loader_cannot_follow_leaves_children_without_one(self):
        """A package with an `exports` map cannot be snapshotted: the operator is told, and children start as before."""
        root = self.make_app({"name": "greet", "main": "lib/main.js", "exports": {".": "./lib/main.js"}})
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            worker = await self.worker(root)
            self.assertIsNone(await worker.snapshot_ready())
        self.assertTrue(any("cannot be made" in line and "exports" in line for line in logs.output), logs.output)
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1"])
        self.assertEqual(self.argv.from_snapshot(), [False])

    async def test_the_vumigo_example_runs_from_its_snapshot(self):
        """examples/vumigo_app (vumigo_v02, lodash, q, moment...) answers its menu from a child started from it."""
        app = os.path.join(EXAMPLES, "vumigo_app")
        self.argv = Argv()
        config = js_config(worker="js-file", javascript_file=os.path.join(app, "app.js"),
                           app_context="{require: require}", snapshot=True,
                           sandbox={"kv": {"cls": "kv", "backend": "memory"}, "outbound": {"cls": "outbound"},
                                    "config": {"cls": "config", "values": {"config": {"name": "Snap Tea"}}}})
        broker = RecordingBroker()
        worker = JsFileSandbox(config, broker=broker, hooks=hooks_with(self.argv))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        await worker.setup()
        snapshot = await worker.snapshot_ready()
        self.assertIsNotNone(snapshot)
        self.assertGreater(len(snapshot.files), 20)
        self.assertEqual(await worker.process_message(make_user_message(content=None, session_event="new")), "ok")
        [reply] = broker.messages()
        self.assertTrue(reply["content"].startswith("Welcome to Snap Tea!"), reply)
        self.assertEqual(self.argv.from_snapshot(), [True])

    async def test_a_child_from_the_snapshot_keeps_the_permission_model(self):
        """Only the builder runs without Node's permission model: a child started from the blob reads, spawns and
        writes nothing it was not allowed to, exactly as a child started from runner.js."""
        root = self.make_app()
        write(os.path.join(root, "app.js"), """
var fs = require('fs');
api.on_inbound_message = function (command) {
    var self = this;
    var attempts = {
        'read-passwd': function () { fs.readFileSync('/etc/passwd'); },
        'child-process': function () { require('child_process').execFileSync('/bin/true'); },
        'write-file': function () { fs.writeFileSync('/tmp/vxsandbox-snapshot-write', 'x'); },
    };
    var results = Object.keys(attempts).map(function (name) {
        try { attempts[name](); return name + ':allowed'; } catch (e) { return name + ':' + (e.code || e.name); }
    });
    self.log_info('#' + results.join(' ') + ' model:' + typeof process.permission, function () { self.done(); });
};
""")
        worker = await self.worker(root, app_context="{require: require, process: process}")
        self.assertIsNotNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [True])
        self.assertEqual(self.said(worker), ["#read-passwd:ERR_ACCESS_DENIED child-process:ERR_ACCESS_DENIED "
                                             "write-file:ERR_ACCESS_DENIED model:object"])
        self.assertFalse(os.path.exists("/tmp/vxsandbox-snapshot-write"))

    async def test_the_runner_is_the_main_module_as_without_a_snapshot(self):
        """``require.main`` (which some packages read to find the program's folder) is the runner in a child from
        the snapshot, as in one started from runner.js, and the module cache holds the runner too."""
        root = self.make_app()
        write(os.path.join(root, "app.js"), """
var greet = require('greet');
api.on_inbound_message = function (command) {
    var self = this;
    var main = require.main;
    var said = [typeof main, main && main.id, main && main.filename.split('/').pop(), main && main.loaded,
                Object.keys(require.cache).some(function (k) { return /runner[.]js$/.test(k); })];
    self.log_info('#' + said.join(' '), function () { self.done(); });
};
""")
        seen = []
        for snapshot in (None, False):
            worker = await self.worker(root, snapshot=snapshot)
            await worker.snapshot_ready()
            self.assertEqual(await self.send(worker, "a"), "ok")
            seen.append((self.argv.from_snapshot(), self.said(worker)))
        self.assertEqual(seen, [([True], ["#object . runner.js true true"]),
                                ([False], ["#object . runner.js true true"])])

    async def test_the_preloaded_names_are_resolved_as_without_a_snapshot(self):
        """A child from the snapshot has the preloaded names in Node's resolution cache, as a child preloaded
        from runner.js has, so the first message's require does not look the packages up again."""
        root = self.make_app()
        write(os.path.join(root, "app.js"), """
api.on_inbound_message = function (command) {
    var self = this;
    var resolved = Object.keys(require('module')._pathCache).some(function (k) {
        return k.split('\\u0000')[0] === 'greet';
    });
    self.log_info('#resolved:' + resolved, function () { self.done(); });
};
""")
        seen = []
        for snapshot in (None, False):
            worker = await self.worker(root, snapshot=snapshot, preload=["greet"])
            await worker.snapshot_ready()
            self.assertEqual(await self.send(worker, "a"), "ok")
            seen.append((self.argv.from_snapshot(), self.said(worker)))
        self.assertEqual(seen, [([True], ["#resolved:true"]), ([False], ["#resolved:true"])])

    async def test_no_snapshot_outside_the_jail(self):
        """The builder runs without Node's permission model, so without bwrap none is made; the operator is told."""
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            worker = await self.worker(self.make_app(), isolation="none")
        self.assertIn("only under isolation bwrap", logs.output[0])
        self.assertIsNone(await worker.snapshot_ready())
        self.assertNotIn("--snapshot-blob", worker.sandbox_args(worker._template_api()))

    async def test_made_by_default_under_the_jail(self):
        """With ``snapshot`` left out (null) a worker under bwrap makes one and its children start from it."""
        worker = await self.worker(self.make_app(), snapshot=None)
        self.assertIsNotNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [True])

    async def test_by_default_what_stops_one_is_only_a_note(self):
        """Left to the default, no jail or a package the loader cannot follow is logged at info, not as a warning:
        the operator asked for nothing that was refused."""
        with self.assertLogs("vxsandbox.worker", "INFO") as logs:
            worker = await self.worker(self.make_app(), snapshot=None, isolation="none")
            self.assertIsNone(await worker.snapshot_ready())
        levels = [line.split(":")[0] for line in logs.output if "startup snapshot" in line]
        self.assertEqual(levels, ["INFO"], logs.output)
        self.assertIn("only under isolation bwrap", logs.output[0])
        root = self.make_app({"name": "greet", "main": "lib/main.js", "exports": {".": "./lib/main.js"}})
        with self.assertLogs("vxsandbox.worker", "INFO") as logs:
            worker = await self.worker(root, snapshot=None)
            self.assertIsNone(await worker.snapshot_ready())
        said = [line for line in logs.output if "cannot be made" in line]
        self.assertEqual(len(said), 1, logs.output)
        self.assertTrue(said[0].startswith("INFO:"), said)
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [False])

    async def test_snapshot_false_makes_none(self):
        """``snapshot: false`` turns them off: no folder, no build, children start from runner.js."""
        worker = await self.worker(self.make_app(), snapshot=False)
        self.assertIsNone(worker.snapshots)
        self.assertIsNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [False])

    async def test_no_folder_for_snapshots_leaves_children_without_one(self):
        """A temp folder that cannot be written does not stop the worker: it says so, and children start as before."""
        self.patch(tempfile, "tempdir", os.path.join(os.path.abspath(self.mktemp()), "missing"))
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            worker = await self.worker(self.make_app())
        self.assertIn("no folder for startup snapshots", logs.output[0])
        self.assertIsNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "a"), "ok")

    async def test_a_snapshot_too_large_is_not_kept(self):
        """A builder whose blob passes MAX_BLOB is killed, and nothing of it is kept: the disk is not the app's."""
        self.patch(snapshot_module, "MAX_BLOB", 1 << 20)
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            worker = await self.worker(self.make_app())
            self.assertIsNone(await worker.snapshot_ready())
        self.assertTrue(any("grew past 1 MiB" in line for line in logs.output), logs.output)
        self.assertEqual(os.listdir(worker.snapshots.directory), [])
        self.assertEqual(await self.send(worker, "a"), "ok")

    async def make_another_shape(self, worker):
        """Has ``worker``'s store make a snapshot of another shape (one more module preloaded) and returns it."""
        api = worker._template_api()
        flags, preload = worker._runner_options(api)
        other = preload.replace('["greet"]', '["greet", "util"]')
        self.assertNotEqual(other, preload)
        return await worker.snapshots.wait(api, flags, other)

    async def test_at_most_max_kept_snapshots_are_kept(self):
        """A worker keeps MAX_KEPT snapshots, one per shape; past that the one handed out longest ago is dropped
        and its file deleted once the grace a starting child may need has passed."""
        self.patch(snapshot_module, "MAX_KEPT", 1)
        self.patch(snapshot_module, "DROPPED_GRACE", 0.2)
        worker = await self.worker(self.make_app())
        first = await worker.snapshot_ready()
        second = await self.make_another_shape(worker)
        self.assertIsNotNone(second)
        self.assertEqual(list(worker.snapshots.ready.values()), [second])
        self.assertTrue(os.path.exists(first.path))
        await deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(os.path.exists(first.path))
        self.assertTrue(os.path.exists(second.path))
        # The worker's own shape is made again when it is next needed; meanwhile children start without it.
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1"])
        self.assertEqual(self.argv.from_snapshot(), [False])
        self.assertIsNotNone(await worker.snapshot_ready())

    async def test_a_snapshot_made_again_within_the_grace_is_not_deleted(self):
        """A dropped shape that comes back before its file's deletion is due is made again at the same path;
        the deletion then leaves the new file alone, and children start from it."""
        self.patch(snapshot_module, "MAX_KEPT", 1)
        self.patch(snapshot_module, "DROPPED_GRACE", 1.0)
        worker = await self.worker(self.make_app())
        first = await worker.snapshot_ready()
        await self.make_another_shape(worker)
        again = await worker.snapshot_ready()
        self.assertEqual(again.path, first.path)
        await deferLater(reactor, 1.2, lambda: None)
        self.assertTrue(os.path.exists(again.path))
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.argv.from_snapshot(), [True])

    async def test_prefork_spares_start_from_it_and_are_prepared(self):
        """Spares started once it is made come from it, take `prepare` while they wait, and serve their message."""
        worker = await self.worker(self.make_app(), prefork=1)
        await worker.snapshot_ready()
        for content in ("a", "b", "c"):
            self.assertEqual(await self.send(worker, content), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1", "Hello, b #1", "Hello, c #1"])
        # The first spare was started with the worker, before the snapshot was made; the later ones from it.
        self.assertEqual(self.argv.from_snapshot(), [False, True, True])

    async def test_one_message_spares_start_from_an_eagerly_compiled_snapshot(self):
        """Where every child is a spare serving one message, the snapshot and its children compile eagerly
        (``--no-lazy``, so the spare compiles while it waits); warm children and cold ones do not."""
        root = self.make_app()
        seen = []
        for extra in ({"prefork": 1}, {"prefork": 1, "messages_per_process": 10}, {}):
            worker = await self.worker(root, **extra)
            await worker.snapshot_ready()
            for content in ("a", "b"):
                self.assertEqual(await self.send(worker, content), "ok")
            seen.append([("--snapshot-blob" in argv, "--no-lazy" in argv) for argv in self.argv.argvs])
            self.assertEqual(len(self.said(worker)), 2)
        self.assertEqual(seen, [[(False, False), (True, True)], [(False, False)], [(True, False), (True, False)]])

    async def test_require_resolve_of_a_missing_module_fails_as_in_node(self):
        """A package probing for an optional module with require.resolve gets Node's MODULE_NOT_FOUND error."""
        root = self.make_app()
        write(os.path.join(root, "node_modules", "greet", "lib", "main.js"), MAIN + """
var optional;
try { optional = require.resolve('no-such-module'); } catch (e) { optional = e.code; }
var realHello = exports.hello;
exports.hello = function (name) { return realHello(name) + ' ' + optional; };
""")
        worker = await self.worker(root)
        self.assertIsNotNone(await worker.snapshot_ready())
        self.assertEqual(await self.send(worker, "a"), "ok")
        self.assertEqual(self.said(worker), ["Hello, a #1 MODULE_NOT_FOUND"])
        self.assertEqual(self.argv.from_snapshot(), [True])
