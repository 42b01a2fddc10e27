"""What a JS child may read (vxsandbox_js.reads): Node's module resolution from the app file, no wider.

Two layouts real apps use, each under Node's permission model alone
(``isolation: none``) and in the bwrap jail: ``node_modules`` in the app's
parent folder (vumigo_v02's own example layout), and a package symlinked in
(``npm link``, pnpm) next to a hostile ``node_modules/x -> /``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message
from vxsandbox_js import JsFileSandbox
from vxsandbox_js.reads import app_reads

from .helpers import EXAMPLES, js_config

VUMIGO_MODULES = os.path.join(EXAMPLES, "vumigo_app", "node_modules")
#: the packages of the example app (vumigo_v02 and its dependencies)
PACKAGES = ("vumigo_v02", "lodash", "q", "jed", "moment")

#: loads vumigo_v02 through require, then tries to read each path the message names
APP = """
var vumigo = require('vumigo_v02');
api.on_inbound_message = function (c) {
    var self = this, m = c.msg, fs = require('fs');
    var probes = JSON.parse(m.content).map(function (p) {
        try { fs.readFileSync(p); return 'read'; } catch (e) { return e.code; }
    });
    self.request('outbound.reply_to', {in_reply_to: m.message_id, continue_session: false,
                                       content: [typeof vumigo.App].concat(probes).join(' ')},
                 function () { self.done(); });
};
"""

#: reads the path the message names without catching the error
DENIED_APP = """
api.on_inbound_message = function (c) { require('fs').readFileSync(c.msg.content); this.done(); };
"""


def _write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


class Layouts:
    """The test packages, built once in a world-readable temp dir (a root worker's child runs as its own uid)."""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="vx-reads-")
        os.chmod(self.base, 0o755)
        # node_modules in the parent folder of the app's folder
        for name in PACKAGES:
            shutil.copytree(os.path.join(VUMIGO_MODULES, name), os.path.join(self.base, "parent", "node_modules", name))
        self.parent_app = _write(os.path.join(self.base, "parent", "app", "app.js"), APP)
        # npm link: the package lives elsewhere with its own dependencies, linked into node_modules
        linked = os.path.join(self.base, "linked", "vumigo_v02")
        shutil.copytree(os.path.join(VUMIGO_MODULES, "vumigo_v02"), linked)
        for name in PACKAGES:
            if name != "vumigo_v02":
                shutil.copytree(os.path.join(VUMIGO_MODULES, name), os.path.join(linked, "node_modules", name))
        modules = os.path.join(self.base, "proj", "node_modules")
        os.makedirs(modules)
        os.symlink(linked, os.path.join(modules, "vumigo_v02"))
        self.root_link = os.path.join(modules, "x")
        os.symlink("/", self.root_link)
        self.linked_app = _write(os.path.join(self.base, "proj", "app.js"), APP)
        self.secret = _write(os.path.join(self.base, "secret", "secret.txt"), "secret")

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.mark.node
class ResolutionReadsTests(TestCase):
    """Apps answer with their packages where Node's resolution finds them, and read nothing wider."""

    timeout = 60
    layouts: Layouts

    @classmethod
    def setUpClass(cls) -> None:
        cls.layouts = Layouts()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.layouts.remove()

    async def answer(self, app: str, probes: list[str], **extra: Any) -> str:
        broker = RecordingBroker()
        config = js_config(sandbox={"outbound": {"cls": "outbound"}}, javascript_file=app,
                           app_context="{require: require}", **extra)
        worker = JsFileSandbox(config, broker=broker, hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)
        outcome = await worker.process_message(make_user_message(content=json.dumps(probes)))
        log = worker.resources.resources["log"]
        self.assertEqual(outcome, "ok", log.messages())  # type: ignore[attr-defined]
        (reply,) = broker.messages("test_transport.outbound")
        return str(reply["content"])

    async def test_parent_node_modules_permission_model(self) -> None:
        """node_modules in the parent folder loads under the permission model; other files stay refused."""
        content = await self.answer(self.layouts.parent_app, [self.layouts.secret], isolation="none")
        self.assertEqual(content, "function ERR_ACCESS_DENIED")

    async def test_parent_node_modules_bwrap(self) -> None:
        """node_modules in the parent folder loads in the jail; other files do not exist there."""
        content = await self.answer(self.layouts.parent_app, [self.layouts.secret], isolation="bwrap",
                                    node_permissions=False)
        self.assertEqual(content, "function ENOENT")

    async def test_linked_package_permission_model(self) -> None:
        """A symlinked package loads; ``node_modules/x -> /`` does not open the host under the permission model."""
        probes = [os.path.join(self.layouts.root_link, "etc", "hostname"), self.layouts.secret]
        content = await self.answer(self.layouts.linked_app, probes, isolation="none")
        self.assertEqual(content, "function ERR_ACCESS_DENIED ERR_ACCESS_DENIED")

    async def test_linked_package_bwrap(self) -> None:
        """A symlinked package loads in the jail; ``node_modules/x -> /`` shows only the jail's own root."""
        probes = [os.path.join(self.layouts.root_link, "etc", "hostname"), self.layouts.secret]
        content = await self.answer(self.layouts.linked_app, probes, isolation="bwrap", node_permissions=False)
        self.assertEqual(content, "function ENOENT ENOENT")

    def test_root_link_is_not_allowed(self) -> None:
        """Neither ``node_modules/x -> /`` nor its folder as a whole (Node follows links inside it) is allowed."""
        reads = app_reads(self.layouts.linked_app)
        self.assertFalse([p for p in reads.allow if os.path.realpath(p) == "/"], reads.allow)
        self.assertNotIn(os.path.dirname(self.layouts.root_link), reads.allow)
        self.assertIn((self.layouts.root_link, "/"), reads.refused)
        self.assertIn(os.path.join(self.layouts.base, "linked", "vumigo_v02"), reads.binds)

    async def test_denied_read_names_path_and_key(self) -> None:
        """A read the permission model refuses is reported to the owner and the operator with the path and the key."""
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("vxsandbox").addHandler(handler)
        self.addCleanup(logging.getLogger("vxsandbox").removeHandler, handler)
        app = _write(os.path.join(self.layouts.base, "denied", "app.js"), DENIED_APP)
        config = js_config(javascript_file=app, app_context="{require: require}", isolation="none")
        worker = JsFileSandbox(config, broker=RecordingBroker(), hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)
        self.assertEqual(await worker.process_message(make_user_message(content=self.layouts.secret)), "error")
        expected = f"refused the app FileSystemRead of {self.layouts.secret!r}"
        owner = [m for m in worker.resources.resources["log"].messages() if expected in m]  # type: ignore[attr-defined]
        operator = [r.getMessage() for r in records if expected in r.getMessage()]
        self.assertEqual(len(owner), 1, worker.resources.resources["log"].messages())  # type: ignore[attr-defined]
        self.assertIn("allow_fs_read", owner[0])
        self.assertEqual(len(operator), 1, [r.getMessage() for r in records])
        self.assertIn("allow_fs_read", operator[0])
