"""Tests for the pluggy hooks: order of calls, answering commands, failing plugins."""

from __future__ import annotations

import pluggy
import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, hookimpl, hookspecs, registry
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.plugins import build_plugin_manager
from vxsandbox_core.testing import hooks_with, make_user_message, python_child, python_worker_config

from .helpers import FakeEntryPoint, OrderPlugin


class HookTests(TestCase):
    async def test_every_hook_fires_in_order_for_one_message(self):
        """A registered plugin sees started, command, reply, ended and processed, in that order."""
        plugin = OrderPlugin()
        worker = Sandbox(python_worker_config(python_child([{"cmd": "record.one"}])), hooks=hooks_with(plugin))
        await worker.setup()
        outcome = await worker.process_message(make_user_message())
        self.assertEqual(outcome, "ok")
        names = [name for name, _ in plugin.calls]
        self.assertEqual(names, [
            "child_started", "run_started",
            "command_received", "reply_sent",      # record.one
            "command_received", "reply_sent",      # record.replies (the child's report)
            "run_ended", "message_processed",
        ])
        self.assertIsInstance(plugin.calls[0][1], int)
        self.assertEqual(plugin.calls[-1], ("message_processed", "ok"))

    async def test_command_received_plugin_can_answer(self):
        """A plugin's reply goes to the child and the resource never sees the command."""
        plugin = OrderPlugin()
        worker = Sandbox(python_worker_config(python_child([{"cmd": "record.intercept"}])),
                         hooks=hooks_with(plugin))
        await worker.setup()
        await worker.process_message(make_user_message())
        record = worker.resources.resources["record"]
        self.assertEqual(record.replies()[0]["answered_by"], "plugin")
        self.assertEqual(record.replies()[0]["cmd_id"], "req-0")
        self.assertNotIn("intercept", [r["cmd"] for r in record.requests])

    async def test_async_plugin_can_answer(self):
        """An async def command_received implementation is awaited."""
        class AsyncPlugin:
            @hookimpl
            async def command_received(self, api, command):
                return {"success": True, "from": "async"} if command["cmd"] == "record.x" else None

        worker = Sandbox(python_worker_config(python_child([{"cmd": "record.x"}])), hooks=hooks_with(AsyncPlugin()))
        await worker.setup()
        await worker.process_message(make_user_message())
        record = worker.resources.resources["record"]
        self.assertEqual(record.replies()[0]["from"], "async")
        self.assertEqual([r["cmd"] for r in record.requests], ["replies"])

    async def test_broken_observer_cannot_break_a_run(self):
        """An observer hook that raises is logged and the run still succeeds."""
        class Broken:
            @hookimpl
            def child_started(self, api, pid):
                raise RuntimeError("observer bug")

            @hookimpl
            def message_processed(self, sandbox_id, message, outcome, duration):
                raise RuntimeError("observer bug")

        worker = Sandbox(python_worker_config(python_child([{"cmd": "record.x"}])), hooks=hooks_with(Broken()))
        await worker.setup()
        self.assertEqual(await worker.process_message(make_user_message()), "ok")
        self.assertEqual(len(self.flushLoggedErrors()), 0)


def test_misspelled_hook_stops_startup():
    """A plugin implementing a hook that does not exist is refused when the manager is built."""
    class Typo:
        @hookimpl
        def sandbox_startd(self, api, pid):
            pass

    pm = build_plugin_manager(load_entry_points=False)
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_plugin_failing_to_import_stops_startup(fake_groups):
    """A plugin entry point that cannot be imported is a startup error naming it."""
    fake_groups[registry.HOOKS_GROUP] = [FakeEntryPoint("policy", "policy_plugin",
                                                        error=ImportError("no module named policy_plugin"))]
    with pytest.raises(ConfigError, match="policy"):
        build_plugin_manager()


def test_allowlist_env_var_limits_plugins(monkeypatch, fake_groups):
    """VXSANDBOX_PLUGINS names the only entry points that load."""
    a, b = (FakeEntryPoint(name, f"{name}_plugin", result=type(name, (), {})()) for name in "ab")
    fake_groups[registry.HOOKS_GROUP] = [a, b]
    monkeypatch.setenv("VXSANDBOX_PLUGINS", "b")
    build_plugin_manager()
    assert (a.loads, b.loads) == (0, 1)


def test_every_hook_is_documented():
    """Each hook spec has a docstring describing every parameter."""
    import inspect
    checked = 0
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if not hasattr(spec, "vxsandbox_spec"):
            continue
        doc = spec.__doc__ or ""
        for param in inspect.signature(spec).parameters:
            assert f":param {param}:" in doc, (name, param)
        checked += 1
    assert checked >= 6
