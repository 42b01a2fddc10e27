"""Tests for resolving cls and worker names: entry points, dotted paths, legacy names, errors."""

from __future__ import annotations

import pytest

from vxsandbox_core import registry
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.resources import SandboxResources
from vxsandbox_core.testing import RecordingResource
from vxsandbox_core.worker import Sandbox


def test_worker_resolves_by_entry_point_name():
    """The entry point name 'sandbox' gives the generic worker class."""
    assert registry.resolve_worker("sandbox") is Sandbox


def test_resource_resolves_by_entry_point_name():
    """Core's own 'config' resource resolves through its entry point."""
    cls = registry.resolve_resource("config")
    assert cls.__module__.startswith("vxsandbox_core.")


@pytest.mark.parametrize("name", ["vxsandbox_core.testing:RecordingResource",
                                  "vxsandbox_core.testing.RecordingResource"])
def test_resource_resolves_by_dotted_path(name):
    """Both 'pkg.mod:Class' and 'pkg.mod.Class' import the class."""
    assert registry.resolve_resource(name) is RecordingResource


@pytest.mark.parametrize("name", ["vxsandbox.worker.Sandbox", "vumi.application.sandbox.Sandbox"])
def test_worker_resolves_by_legacy_name(name):
    """Old vxsandbox and Vumi class paths still name the generic worker."""
    assert registry.resolve_worker(name) is Sandbox


@pytest.mark.parametrize("name, dist", [
    ("vxsandbox.resources.kv.RedisResource", "vxsandbox-resources-kv"),
    ("vumi.application.sandbox.RedisResource", "vxsandbox-resources-kv"),
    ("vxsandbox.resources.http.HttpClientResource", "vxsandbox-resources-http"),
    ("vxsandbox.resources.logging.LoggingResource", "vxsandbox-resources-log"),
    ("vxsandbox.resources.outbound.OutboundResource", "vxsandbox-resources-outbound"),
    ("kv", "vxsandbox-resources-kv"),
    ("go.apps.jsbox.contacts.ContactsResource", "vxsandbox-resources-contacts"),
    ("go.apps.jsbox.contacts.GroupsResource", "vxsandbox-resources-contacts"),
    ("go.apps.jsbox.optout.OptoutResource", "vxsandbox-resources-contacts"),
    ("contacts", "vxsandbox-resources-contacts"),
])
def test_missing_distribution_is_named(monkeypatch, name, dist):
    """A name whose plugin is not installed says which distribution to pip install."""
    monkeypatch.setitem(registry._managers, registry.RESOURCES_GROUP, {})
    with pytest.raises(ConfigError, match=f"pip install {dist}") as e:
        registry.resolve_resource(name, key="sandbox.kv.cls")
    assert "sandbox.kv.cls" in str(e.value)


def test_legacy_js_workers_name_their_distribution(monkeypatch):
    """The old JS worker names resolve to the js distribution's workers, or say to install it."""
    monkeypatch.setitem(registry._managers, registry.WORKERS_GROUP, {})
    for name in ("vxsandbox.worker.JsSandbox", "vxsandbox.worker.JsFileSandbox",
                 "vxsandbox.worker.StandaloneJsFileSandbox"):
        with pytest.raises(ConfigError, match="pip install vxsandbox-js"):
            registry.resolve_worker(name)


def test_unknown_name_lists_what_is_installed():
    """A short name nobody provides is an error listing installed names."""
    with pytest.raises(ConfigError, match="not an installed resource") as e:
        registry.resolve_resource("nosuch", key="sandbox.x.cls")
    assert "config" in str(e.value)


def test_unimportable_path_is_a_config_error():
    """A dotted path that does not import is a config error naming it."""
    with pytest.raises(ConfigError, match="no_such_module"):
        registry.resolve_resource("no_such_module.Thing")


def test_worker_name_is_not_a_resource():
    """A legacy worker name given as a resource cls is refused plainly."""
    with pytest.raises(ConfigError, match="is a worker"):
        registry.resolve_resource("vxsandbox.worker.JsSandbox")


def test_broken_plugin_is_reported_not_hidden(monkeypatch):
    """An entry point that fails to import is reported with its error, not as 'not installed'."""
    broken = registry.Plugin(registry.RESOURCES_GROUP, "bad", "bad_pkg:Res", "bad-dist", "1.0",
                             "ImportError: boom", None)
    monkeypatch.setitem(registry._managers, registry.RESOURCES_GROUP, {"bad": broken})
    with pytest.raises(ConfigError, match="bad-dist failed to import: ImportError: boom"):
        registry.resolve_resource("bad")


def test_resources_built_from_config_name_bad_key():
    """A resource config without cls names the key in the error."""
    with pytest.raises(ConfigError, match="sandbox.kv.cls"):
        SandboxResources(None, {"kv": {"cls": "nosuch_mod.X"}})
