"""Tests for the V8 code cache: made by the worker, used by children, and ignored when stale or corrupt."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsFileSandbox
from vxsandbox_js.codecache import VERIFY_FLAG, compile_cache_path
from vxsandbox_js.node import find_node

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

#: Logs what its library says and the child's code cache counters, then ends the run.
APP = """
var lib = require('lib');
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info('lib says ' + lib.word + ' stats ' + stats(), function () { self.done(); });
};
"""
CONTEXT = ("{require: require, stats: function () { return JSON.stringify(require(" + json.dumps(compile_cache_path())
           + ").stats); }}")
LIB = "exports.word = 'one';\n"
#: size of an entry's header: magic, source bytes, data bytes
HEADER = 12


def make_app(root: str, app: str = APP, lib: str = LIB) -> str:
    """An app file with a node_modules/lib next to it; returns the app's path."""
    os.makedirs(os.path.join(root, "node_modules", "lib"))
    with open(os.path.join(root, "node_modules", "lib", "index.js"), "w") as f:
        f.write(lib)
    path = os.path.join(root, "app.js")
    with open(path, "w") as f:
        f.write(app)
    return path


def entries(directory: str) -> dict[str, bytes]:
    return {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)}


class CodeCacheTests(TestCase):
    def worker(self, app_path: str, **extra):
        config = js_config(worker="js-file", javascript_file=app_path, app_context=CONTEXT,
                           messages_per_process=1, **extra)
        worker = make_worker(JsFileSandbox, config)
        self.addCleanup(worker.teardown)
        return worker

    async def said(self, worker) -> tuple[str, dict[str, int]]:
        """Send one message; what the library said and the child's cache counters."""
        outcome = await worker.process_message(make_user_message(content="hi", sandbox_id="t1"))
        lines = [m for m in worker.resources.resources["log"].messages() if m.startswith("lib says ")]
        self.assertEqual(outcome, "ok", worker.resources.resources["log"].messages())
        _, _, word, _, stats = lines[-1].split(" ", 4)
        return word, json.loads(stats)

    async def test_children_compile_the_app_and_its_modules_from_the_cache(self):
        """The worker stores an entry for the app and for each module, and a child's V8 accepts both."""
        worker = self.worker(make_app(self.mktemp()))
        await worker.setup()
        names = sorted(n.split("-")[0] for n in os.listdir(worker._code_cache_dir))
        self.assertEqual(names, ["app", "module"])
        word, stats = await self.said(worker)
        self.assertEqual(word, "one")
        self.assertEqual(stats, {"accepted": 2, "rejected": 0, "invalid": 0, "missing": 0})

    async def test_corrupt_cached_data_is_rejected_and_the_app_still_runs(self):
        """A flipped byte in V8's data is caught by its checksum: compiled from source, same answer."""
        worker = self.worker(make_app(self.mktemp()))
        await worker.setup()
        for name, entry in entries(worker._code_cache_dir).items():
            source_length, data_length = struct.unpack_from("<II", entry, 4)
            data_start = len(entry) - data_length
            corrupt = bytearray(entry)
            corrupt[data_start + data_length // 2] ^= 0x55
            with open(os.path.join(worker._code_cache_dir, name), "wb") as f:
                f.write(corrupt)
        word, stats = await self.said(worker)
        self.assertEqual(word, "one")
        self.assertEqual(stats, {"accepted": 0, "rejected": 2, "invalid": 0, "missing": 0})

    async def test_truncated_or_garbage_entries_are_ignored(self):
        """An entry cut short, or not an entry at all, is never handed to V8."""
        worker = self.worker(make_app(self.mktemp()))
        await worker.setup()
        for i, (name, entry) in enumerate(sorted(entries(worker._code_cache_dir).items())):
            with open(os.path.join(worker._code_cache_dir, name), "wb") as f:
                f.write(entry[:len(entry) - 7] if i == 0 else b"\0" * 64)
        word, stats = await self.said(worker)
        self.assertEqual(word, "one")
        self.assertEqual(stats, {"accepted": 0, "rejected": 0, "invalid": 2, "missing": 0})

    async def test_an_edited_source_never_meets_its_old_cache(self):
        """Sources edited after the cache was made (same length, which V8 alone would accept) run as edited."""
        root = self.mktemp()
        app_path = make_app(root)
        worker = self.worker(app_path)
        await worker.setup()
        with open(os.path.join(root, "node_modules", "lib", "index.js"), "w") as f:
            f.write(LIB.replace("one", "two"))
        with open(app_path, "w") as f:
            f.write(APP.replace("lib says", "lib said"))
        outcome = await worker.process_message(make_user_message(content="hi", sandbox_id="t1"))
        self.assertEqual(outcome, "ok")
        line = [m for m in worker.resources.resources["log"].messages() if m.startswith("lib said ")][-1]
        self.assertEqual(line.split(" ")[2], "two")
        self.assertEqual(json.loads(line.split(" ", 4)[4]), {"accepted": 0, "rejected": 0, "invalid": 2, "missing": 0})

    async def test_a_child_cannot_write_into_the_cache(self):
        """An app that tries to plant an entry is refused by the permission model, and nothing appears."""
        app = """
        api.on_inbound_message = function () {
            var self = this, dir = argv.filter(function (a) { return a.indexOf('--code-cache=') === 0; })[0].slice(13);
            var result;
            try { require('fs').writeFileSync(dir + '/module-0000000000000000', 'planted'); result = 'written'; }
            catch (e) { result = e.code; }
            self.log_info('write: ' + result, function () { self.done(); });
        };
        """
        app_path = make_app(self.mktemp(), app=app)
        worker = make_worker(JsFileSandbox, js_config(worker="js-file", javascript_file=app_path,
                                                      app_context="{require: require, argv: process.argv}"))
        self.addCleanup(worker.teardown)
        await worker.setup()
        before = sorted(os.listdir(worker._code_cache_dir))
        await worker.process_message(make_user_message(content="hi", sandbox_id="t1"))
        self.assertIn("write: ERR_ACCESS_DENIED", worker.resources.resources["log"].messages())
        self.assertEqual(sorted(os.listdir(worker._code_cache_dir)), before)

    async def test_no_cache_where_children_could_write_one(self):
        """Without the permission model the worker makes no cache and passes none to children."""
        worker = self.worker(make_app(self.mktemp()), node_permissions=False)
        await worker.setup()
        self.assertIsNone(worker._code_cache_dir)
        args = worker.sandbox_args(worker._template_api())
        self.assertFalse([a for a in args if a.startswith("--code-cache=") or a == VERIFY_FLAG])
        word, stats = await self.said(worker)
        self.assertEqual((word, stats["accepted"]), ("one", 0))

    async def test_the_cache_goes_with_the_worker(self):
        """The worker's cache directory is removed when it stops."""
        worker = self.worker(make_app(self.mktemp()))
        await worker.setup()
        root = worker._code_cache_root
        self.assertTrue(os.path.isdir(root))
        await worker.teardown()
        self.assertFalse(os.path.exists(root))


def test_v8_rejects_a_cache_made_under_other_flags(tmp_path):
    """An entry made with another heap size (another V8 flag hash) is rejected by V8 and compiled anew."""
    node = find_node()
    module = tmp_path / "m.js"
    module.write_text("module.exports = 6 * 7;\n")
    job = json.dumps({"app": None, "from": str(tmp_path / "app.js"), "modules": ["./m.js"]})
    made = subprocess.run([node, "--max-old-space-size=64", VERIFY_FLAG, compile_cache_path()], input=job,
                          capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    entry = json.loads(made[0])
    (tmp_path / entry["name"]).write_bytes(base64.b64decode(entry["entry"]))
    cc, cache_dir, required = (json.dumps(p) for p in (compile_cache_path(), str(tmp_path), str(module)))
    reader = (f"const cc = require({cc}); cc.install({cache_dir}); const v = require({required});"
              "process.stdout.write(JSON.stringify([v, cc.stats]));")
    for heap, accepted, rejected in (("64", 1, 0), ("96", 0, 1)):
        out = subprocess.run([node, f"--max-old-space-size={heap}", VERIFY_FLAG, "-e", reader],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        value, stats = json.loads(out)
        assert value == 42
        assert (stats["accepted"], stats["rejected"]) == (accepted, rejected)
