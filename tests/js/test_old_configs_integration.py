"""Old configs run unchanged: vxsandbox 0.6 and Vumi sandbox worker configs as public repositories wrote them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import txredisapi
import yaml
from twisted.trial.unittest import TestCase

from vxsandbox_core.cli import check_config, with_worker_class
from vxsandbox_core.registry import resolve_worker
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message

from .helpers import EXAMPLES

pytestmark = [pytest.mark.node, pytest.mark.redis]

FIXTURES = Path(__file__).parent / "old_configs"
APP_DIR = os.path.join(EXAMPLES, "vumigo_app")
MENU = "Welcome to Tea Time! What would you like?\n1. Tea\n2. Coffee"

#: each old form: its fixture, the --worker-class its deployment named, and the warnings it earns
FORMS = {
    "vxsandbox06_standalone": ("vxsandbox.worker.StandaloneJsFileSandbox", [
        "'rlimits.RLIMIT_AS' of 256 MiB is deprecated"]),
    "vumi_jsfilesandbox": ("vumi.application.sandbox.JsFileSandbox", [
        "'worker_name' is deprecated", "'metrics_prefix' is deprecated", "'redis_manager' is deprecated",
        "'riak_manager' is deprecated", "'args' is deprecated when it starts Vumi's sandboxer.js",
        "'sandbox.kv.keys_per_user' is deprecated"]),
}


def old_config(form: str, folder: Path, transport: str, key_prefix: str) -> Path:
    """The fixture filled in for this machine (app folder, a fresh Redis prefix), written to ``folder``."""
    config_json = folder / "config.json"
    config_json.write_text(json.dumps({"name": "Tea Time"}))
    text = (FIXTURES / f"{form}.yaml").read_text().format(
        app_dir=APP_DIR, key_prefix=key_prefix, transport=transport, config_json=config_json)
    path = folder / f"{form}.yaml"
    path.write_text(text)
    return path


class OldConfigTests(TestCase):
    """Each old form passes `vxsandbox check --worker-class` and answers a message through Redis."""

    timeout = 60

    def setUp(self) -> None:
        if not os.path.isdir(os.path.join(APP_DIR, "node_modules", "vumigo_v02")):
            pytest.fail("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")
        self.prefix = f"test-old-{uuid.uuid4().hex}"
        self.folder = Path(self.mktemp())
        self.folder.mkdir(parents=True)

    async def redis_keys(self) -> list[str]:
        conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
        try:
            keys = sorted(await conn.keys(self.prefix + ":*"))
            if keys:
                await conn.delete(keys)
            return keys
        finally:
            await conn.disconnect()

    def check_cli(self, path: Path, worker_class: str, warnings: list[str]) -> None:
        """`vxsandbox check` refuses the file alone and accepts it with --worker-class, warning as expected."""
        alone = subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", "check", "-c", str(path)],
                               capture_output=True, text=True, timeout=60)
        assert alone.returncode == 1 and "pass --worker-class" in alone.stderr, alone.stderr
        proc = subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", "check", "-c", str(path),
                               "--worker-class", worker_class], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        printed = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        assert len(printed) == len(warnings), printed
        for words in warnings:
            assert any(words in line for line in printed), (words, printed)

    async def run_form(self, form: str) -> None:
        worker_class, warnings = FORMS[form]
        transport = f"old_{form}"
        path = old_config(form, self.folder, transport, self.prefix)
        self.check_cli(path, worker_class, warnings)
        raw = with_worker_class(yaml.safe_load(path.read_text()), worker_class)
        assert check_config(raw)[1] == []
        broker = RecordingBroker()
        with self.assertLogs("vxsandbox.config", logging.WARNING):
            worker = resolve_worker(worker_class)(raw, broker=broker, hooks=hooks_with())
        await worker.setup()
        try:
            outcome = await worker.process_message(make_user_message(
                transport_name=transport, transport_type="ussd", content=None, session_event="new"))
        finally:
            await worker.teardown()
        assert outcome == "ok"
        [reply] = broker.messages(f"{transport}.outbound")
        assert reply["content"] == MENU
        # The app kept its user's state in Redis under the old key prefix, in the old key scheme.
        keys = await self.redis_keys()
        assert f"{self.prefix}:sandboxes#{worker.config.sandbox_id}#users.Tea Time.+27831234567" in keys, keys

    async def test_vxsandbox06_standalone(self) -> None:
        """A vxsandbox 0.6 StandaloneJsFileSandbox config (vxsandbox.RedisResource, ...) runs unchanged."""
        await self.run_form("vxsandbox06_standalone")

    async def test_vumi_jsfilesandbox(self) -> None:
        """A Vumi JsFileSandbox config (sandboxer.js args, host/port/db Redis, Vumi worker keys) runs unchanged."""
        await self.run_form("vumi_jsfilesandbox")

