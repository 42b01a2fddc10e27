"""The plugin manager: pluggy hooks loaded from the ``vxsandbox`` entry point group.

Built on first use, never at import, so tests and embedders can build their
own. ``VXSANDBOX_PLUGINS`` (comma-separated entry point names) restricts
which installed plugins load; an empty value loads none.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import pluggy
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from . import hookspecs
from .aio import call_deferred
from .errors import ConfigError
from .registry import HOOKS_GROUP, installed

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = HOOKS_GROUP

_manager: pluggy.PluginManager | None = None


def build_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager with vxsandbox's hook specs and the installed plugins.

    :raises ConfigError: a plugin failed to import or implements a hook that
        does not exist (skipping it silently could open a hole if it is a
        policy plugin).
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        _load_entry_points(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise ConfigError("", f"plugin {e.plugin!r} implements an unknown hook: {e}") from None
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allow = os.environ.get("VXSANDBOX_PLUGINS")
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    for name, entry_point in installed(ENTRY_POINT_GROUP).items():
        if allowed is not None and name not in allowed:
            continue
        if entry_point.error is not None:
            raise ConfigError("", f"plugin {name!r} from {entry_point.distribution} failed to import: "
                                  f"{entry_point.error}")
        pm.register(entry_point.loaded, name=name)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, building it on first use."""
    global _manager
    if _manager is None:
        _manager = build_plugin_manager()
    return _manager


class Hooks:
    """Calls hooks for the worker, turning results into Deferreds and containing failures.

    pluggy calls implementations synchronously, so an ``async def``
    implementation hands back an un-awaited coroutine; this is the one place
    that converts such results for Twisted.
    """

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()

    def notify(self, name: str, **kwargs: Any) -> None:
        """Call an observer hook; a failing observer is logged and ignored."""
        hook = getattr(self.pm.hook, name)
        if not hook.get_hookimpls():
            return
        try:
            results = hook(**kwargs)
        except Exception:
            log.exception("plugin hook %s raised; ignoring it", name)
            return
        for result in results or ():
            if inspect.iscoroutine(result) or isinstance(result, Deferred):
                d = ensureDeferred(result) if inspect.iscoroutine(result) else result
                d.addErrback(lambda f: log.error("plugin hook %s failed: %s", name, f.getErrorMessage()))

    def first_result(self, name: str, **kwargs: Any) -> Deferred[Any]:
        """Call a firstresult hook and return a Deferred of its (awaited) result."""
        hook = getattr(self.pm.hook, name)
        if not hook.get_hookimpls():
            return succeed(None)
        return call_deferred(hook, **kwargs)
