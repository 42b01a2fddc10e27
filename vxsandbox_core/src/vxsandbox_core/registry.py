"""Resolving ``cls`` and ``worker`` names to classes: entry point, dotted path, then legacy name.

Entry points are read through one cached stevedore ``ExtensionManager`` per
group, which records import failures instead of letting them look like a
missing plugin. A name that resolves to nothing is a :class:`ConfigError`
that says which distribution to ``pip install``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from stevedore import ExtensionManager

from .errors import ConfigError

log = logging.getLogger(__name__)

RESOURCES_GROUP = "vxsandbox.resources"
WORKERS_GROUP = "vxsandbox.workers"

#: Which distribution provides each well-known entry point name.
DISTRIBUTIONS: dict[tuple[str, str], str] = {
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
}

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


@dataclass(frozen=True)
class Plugin:
    """One installed entry point: its name, target, distribution and import error if any."""

    group: str
    name: str
    target: str
    distribution: str
    version: str
    error: str | None
    plugin: Any


_managers: dict[str, dict[str, Plugin]] = {}


def installed(group: str) -> dict[str, Plugin]:
    """Return the entry points of ``group``, loading them once per process."""
    if group not in _managers:
        failures: dict[str, str] = {}

        def failed(manager: Any, ep: Any, err: BaseException) -> None:
            failures[ep.name] = f"{type(err).__name__}: {err}"

        mgr: ExtensionManager[Any] = ExtensionManager(group, on_load_failure_callback=failed)
        loaded = {ext.name: ext.plugin for ext in mgr.extensions}
        # stevedore's cached entry points carry no distribution; importlib.metadata's do.
        dists = {ep.name: ep.dist for ep in metadata.entry_points(group=group)}
        plugins: dict[str, Plugin] = {}
        for ep in mgr.list_entry_points():
            dist = dists.get(ep.name)
            plugins[ep.name] = Plugin(group, ep.name, ep.value, dist.name if dist else "?",
                                      dist.version if dist else "?", failures.get(ep.name),
                                      loaded.get(ep.name))
        _managers[group] = plugins
    return _managers[group]


def clear_cache() -> None:
    """Forget loaded entry points (tests that install plugins call this)."""
    _managers.clear()


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
                               f"pip install {DISTRIBUTIONS[(group, ep_name)]}")
    if "." in name or ":" in name:
        try:
            return _import_path(name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(key, f"cannot import {kind} class {name!r} ({e}); install the "
                                   "distribution that provides it") from None
    dist = DISTRIBUTIONS.get((group, name))
    hint = f"pip install {dist}" if dist else (
        "install the distribution that provides it; installed: " + (", ".join(sorted(plugins)) or "none"))
    raise ConfigError(key, f"{name!r} is not an installed {kind}; {hint}")


def _loaded(plugin: Plugin, key: str) -> Any:
    if plugin.error is not None:
        raise ConfigError(key, f"{plugin.group} plugin {plugin.name!r} from {plugin.distribution} "
                               f"failed to import: {plugin.error}")
    return plugin.plugin


def resolve_resource(name: Any, key: str = "cls") -> Any:
    """Resolve a resource ``cls`` value to its class."""
    return resolve(RESOURCES_GROUP, name, key)


def resolve_worker(name: Any, key: str = "worker") -> Any:
    """Resolve a ``worker`` value to its class."""
    return resolve(WORKERS_GROUP, name, key)
