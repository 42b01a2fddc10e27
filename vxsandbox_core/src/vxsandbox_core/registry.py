"""Installed entry points, and resolving ``cls`` and ``worker`` names to classes.

The one loader of entry points: resources (``vxsandbox.resources``), workers
(``vxsandbox.workers``) and hook plugins (``vxsandbox``) are listed through
stevedore without importing anything, keeping every entry point's
distribution; each one is imported on first use (a stevedore
``NamedExtensionManager`` for that one name) and its import error kept, so a
broken plugin never looks like a missing one. A name resolves as an entry
point name, then a dotted path, then a legacy Vumi name; one that resolves
to nothing is a :class:`ConfigError` that says which distribution to
``pip install``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from stevedore import ExtensionManager, NamedExtensionManager

from .errors import ConfigError

log = logging.getLogger(__name__)

RESOURCES_GROUP = "vxsandbox.resources"
WORKERS_GROUP = "vxsandbox.workers"
#: hook plugins (pluggy), which also add commands to ``vxsandbox``
HOOKS_GROUP = "vxsandbox"
#: not an entry point group: the key of well-known ``vxsandbox`` subcommands in :data:`PROVIDERS`
COMMANDS_GROUP = "vxsandbox commands"

#: Which distribution provides each well-known name, to say what to ``pip install`` when it is missing.
PROVIDERS: dict[tuple[str, str], str] = {
    (RESOURCES_GROUP, "kv"): "vxsandbox-resources-kv",
    (RESOURCES_GROUP, "http"): "vxsandbox-resources-http",
    (RESOURCES_GROUP, "log"): "vxsandbox-resources-log",
    (RESOURCES_GROUP, "outbound"): "vxsandbox-resources-outbound",
    (RESOURCES_GROUP, "contacts"): "vxsandbox-resources-contacts",
    (RESOURCES_GROUP, "groups"): "vxsandbox-resources-contacts",
    (RESOURCES_GROUP, "optout"): "vxsandbox-resources-contacts",
    (RESOURCES_GROUP, "js"): "vxsandbox-js",
    (RESOURCES_GROUP, "config"): "vxsandbox-core",
    (RESOURCES_GROUP, "metrics"): "vxsandbox-core",
    (RESOURCES_GROUP, "run"): "vxsandbox-core",
    (WORKERS_GROUP, "sandbox"): "vxsandbox-core",
    (WORKERS_GROUP, "js"): "vxsandbox-js",
    (WORKERS_GROUP, "js-file"): "vxsandbox-js",
    (WORKERS_GROUP, "js-standalone"): "vxsandbox-js",
    (COMMANDS_GROUP, "chat"): "vxsandbox-js",
}


def provider_of(group: str, name: str) -> str | None:
    """The distribution that provides the well-known ``name`` of ``group``, or None."""
    return PROVIDERS.get((group, name))


_LEGACY_RESOURCES = {
    "resources.kv.RedisResource": "kv",
    "resources.http.HttpClientResource": "http",
    "resources.logging.LoggingResource": "log",
    "resources.outbound.OutboundResource": "outbound",
    "resources.config.FileConfigResource": "config",
    "resources.metrics.MetricsResource": "metrics",
    "resources.js.JsSandboxResource": "js",
}
_LEGACY_WORKERS = {
    "worker.Sandbox": "sandbox",
    "worker.JsSandbox": "js",
    "worker.JsFileSandbox": "js-file",
    "worker.StandaloneJsFileSandbox": "js-standalone",
}


def _legacy_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for prefix in ("vxsandbox.", "vumi.application.sandbox."):
        for tail, name in _LEGACY_RESOURCES.items():
            table[prefix + tail] = (RESOURCES_GROUP, name)
        for tail, name in _LEGACY_WORKERS.items():
            table[prefix + tail] = (WORKERS_GROUP, name)
    # Old Vumi kept everything in one module; old vxsandbox re-exported every class from its
    # package (configs say vxsandbox.RedisResource) and the resources from vxsandbox.resources.
    for tail, name in _LEGACY_RESOURCES.items():
        for module in ("vumi.application.sandbox.", "vxsandbox.", "vxsandbox.resources."):
            table[module + tail.rsplit(".", 1)[1]] = (RESOURCES_GROUP, name)
    for tail, name in _LEGACY_WORKERS.items():
        for module in ("vumi.application.sandbox.", "vxsandbox."):
            table[module + tail.rsplit(".", 1)[1]] = (WORKERS_GROUP, name)
    # Vumi Go's own resources (the module is opt_out.py; configs also say optout.OptoutResource).
    for name, tail in [("contacts", "contacts.ContactsResource"), ("groups", "contacts.GroupsResource"),
                       ("optout", "optout.OptoutResource"), ("optout", "opt_out.OptOutResource")]:
        table["go.apps.jsbox." + tail] = (RESOURCES_GROUP, name)
    return table


#: Old Vumi and vxsandbox class paths, mapped to (group, entry point name).
LEGACY_NAMES: dict[str, tuple[str, str]] = _legacy_table()


_UNLOADED = object()


@dataclass(eq=False)
class InstalledEntryPoint:
    """One installed entry point: name, target and distribution; imported on first use, its error kept.

    :param load: imports the target (through stevedore for an installed entry point).
    """

    group: str
    name: str
    #: ``module:attr`` as declared
    target: str
    distribution: str
    version: str
    load: Callable[[], Any] = field(repr=False)
    _loaded: Any = field(default=_UNLOADED, init=False, repr=False)
    _error: str | None = field(default=None, init=False, repr=False)

    def _import(self) -> None:
        if self._loaded is not _UNLOADED or self._error is not None:
            return
        try:
            self._loaded = self.load()
        except Exception as e:
            self._error = f"{type(e).__name__}: {e}"
            log.debug("%s entry point %r from %s failed to import", self.group, self.name, self.distribution,
                      exc_info=True)

    @property
    def loaded(self) -> Any:
        """The imported object, or None when it failed to import (see :attr:`error`)."""
        self._import()
        return None if self._loaded is _UNLOADED else self._loaded

    @property
    def error(self) -> str | None:
        """Why the import failed (``Type: message``), or None when it worked."""
        self._import()
        return self._error


_cache: dict[str, dict[str, InstalledEntryPoint]] = {}
_declared_by: dict[tuple[str, str, str], metadata.Distribution] | None = None


def installed(group: str) -> dict[str, InstalledEntryPoint]:
    """The entry points of ``group`` by name, listed once per process (nothing is imported yet)."""
    if group not in _cache:
        found: dict[str, InstalledEntryPoint] = {}
        # names=[] lists the group and imports none of it.
        for ep in NamedExtensionManager(group, names=[], on_missing_entrypoints_callback=None).list_entry_points():
            if ep.name in found:
                continue
            dist = _distribution(ep)
            found[ep.name] = InstalledEntryPoint(
                group, ep.name, ep.value, dist.name if dist else "unknown distribution",
                dist.version if dist else "?", _loader(group, ep.name))
        _cache[group] = found
    return _cache[group]


def _distribution(ep: metadata.EntryPoint) -> metadata.Distribution | None:
    """The distribution that declares ``ep``.

    stevedore's cached listing drops ``ep.dist``; packages_distributions()
    cannot name an editable install (it lists no modules), so the
    distributions' own entry point declarations are read, once.
    """
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist  # type: ignore[no-any-return]
    global _declared_by
    if _declared_by is None:
        _declared_by = {}
        for candidate in metadata.distributions():
            for declared in candidate.entry_points:
                _declared_by.setdefault((declared.group, declared.name, declared.value), candidate)
    return _declared_by.get((ep.group, ep.name, ep.value))


def _loader(group: str, name: str) -> Callable[[], Any]:
    def load() -> Any:
        failures: list[BaseException] = []
        # A failure callback, because stevedore otherwise logs the error and carries on as if
        # the plugin were not installed.
        manager: NamedExtensionManager[Any] = NamedExtensionManager(
            group, names=[name], on_missing_entrypoints_callback=None,
            on_load_failure_callback=lambda _manager, _ep, error: failures.append(error))
        if failures:
            raise failures[0]
        return manager[name].plugin
    return load


def clear_cache() -> None:
    """Forget listed entry points (tests that install or fake plugins call this)."""
    global _declared_by
    _cache.clear()
    _declared_by = None
    ExtensionManager.ENTRY_POINT_CACHE.clear()


def _import_path(path: str) -> Any:
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not a 'package.module:Class' path")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(group: str, name: Any, key: str) -> Any:
    """Resolve ``name`` in ``group``: entry point, then class path, then legacy name.

    :param key: the config key the name came from, for the error message.
    :raises ConfigError: nothing by that name is installed or importable.
    """
    kind = "resource" if group == RESOURCES_GROUP else "worker"
    if not isinstance(name, str) or not name:
        raise ConfigError(key, f"expected the name of a {kind} class, got {name!r}")
    plugins = installed(group)
    if name in plugins:
        return _loaded(plugins[name], key)
    if name in LEGACY_NAMES:
        legacy_group, ep_name = LEGACY_NAMES[name]
        if legacy_group != group:
            raise ConfigError(key, f"{name!r} is a {'worker' if kind == 'resource' else 'resource'}, "
                                   f"not a {kind}")
        if ep_name in plugins:
            return _loaded(plugins[ep_name], key)
        raise ConfigError(key, f"{name!r} is the old name of the {kind} {ep_name!r}, which is not installed; "
                               f"pip install {PROVIDERS[(group, ep_name)]}")
    if "." in name or ":" in name:
        try:
            return _import_path(name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(key, f"cannot import {kind} class {name!r} ({e}); install the "
                                   "distribution that provides it") from None
    dist = provider_of(group, name)
    hint = f"pip install {dist}" if dist else (
        "install the distribution that provides it; installed: " + (", ".join(sorted(plugins)) or "none"))
    raise ConfigError(key, f"{name!r} is not an installed {kind}; {hint}")


def _loaded(entry_point: InstalledEntryPoint, key: str) -> Any:
    if entry_point.error is not None:
        raise ConfigError(key, f"{entry_point.group} plugin {entry_point.name!r} from {entry_point.distribution} "
                               f"failed to import: {entry_point.error}")
    return entry_point.loaded


def resolve_resource(name: Any, key: str = "cls") -> Any:
    """Resolve a resource ``cls`` value to its class."""
    return resolve(RESOURCES_GROUP, name, key)


def resolve_worker(name: Any, key: str = "worker") -> Any:
    """Resolve a ``worker`` value to its class."""
    return resolve(WORKERS_GROUP, name, key)
