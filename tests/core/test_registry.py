"""Tests for resolving cls and worker names: entry points, dotted paths, legacy names, errors."""

from __future__ import annotations

import pytest

from vxsandbox_core import registry
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.resources import SandboxResources
from vxsandbox_core.testing import RecordingResource
from vxsandbox_core.worker import Sandbox

from .helpers import FakeEntryPoint


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
    monkeypatch.setitem(registry._cache, registry.RESOURCES_GROUP, {})
    with pytest.raises(ConfigError, match=f"pip install {dist}") as e:
        registry.resolve_resource(name, key="sandbox.kv.cls")
    assert "sandbox.kv.cls" in str(e.value)


def test_legacy_js_workers_name_their_distribution(monkeypatch):
    """The old JS worker names resolve to the js distribution's workers, or say to install it."""
    monkeypatch.setitem(registry._cache, registry.WORKERS_GROUP, {})
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


def failing_import(error: Exception):
    """An entry point's load() that raises ``error``."""
    def load():
        raise error
    return load


def test_one_loader_for_resources_workers_and_hooks(fake_groups):
    """Every group is scanned by one loader that keeps each entry point's distribution and imports it lazily."""
    good = FakeEntryPoint("fine", "pkg.mod:Fine", result=Sandbox)
    bad = FakeEntryPoint("bad", "broken_pkg:Res", error=ModuleNotFoundError("No module named 'broken_pkg'"))
    hook = FakeEntryPoint("audit", "audit_pkg")
    fake_groups.update({registry.RESOURCES_GROUP: [good, bad], registry.WORKERS_GROUP: [],
                        registry.HOOKS_GROUP: [hook]})
    resources = registry.installed(registry.RESOURCES_GROUP)
    assert (resources["fine"].target, resources["fine"].distribution, resources["fine"].version) == \
        ("pkg.mod:Fine", "dist-of-fine", "7.0")
    assert good.loads == bad.loads == 0
    assert registry.resolve_resource("fine") is Sandbox
    assert bad.loads == 0
    for _ in range(2):
        assert resources["bad"].error == "ModuleNotFoundError: No module named 'broken_pkg'"
        assert resources["bad"].loaded is None
    assert bad.loads == 1
    assert registry.installed(registry.HOOKS_GROUP)["audit"].distribution == "dist-of-audit"


def test_hook_plugins_come_from_the_same_loader(fake_groups):
    """The plugin manager registers what the shared loader imported; a broken plugin's error names its dist."""
    from vxsandbox_core.plugins import build_plugin_manager
    plugin = type("Audit", (), {})()
    fake_groups[registry.HOOKS_GROUP] = [FakeEntryPoint("audit", "audit_pkg", result=plugin)]
    assert build_plugin_manager().get_plugin("audit") is plugin
    assert registry.installed(registry.HOOKS_GROUP)["audit"].loaded is plugin
    registry.clear_cache()
    fake_groups[registry.HOOKS_GROUP] = [FakeEntryPoint("policy", "policy_pkg", error=ImportError("nope"))]
    with pytest.raises(ConfigError, match="'policy' from dist-of-policy failed to import: ImportError: nope"):
        build_plugin_manager()


def test_every_install_hint_is_true():
    """Each name registry.PROVIDERS sends users to install is declared by that distribution's pyproject.toml."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2]
    declared: dict[tuple[str, str], str] = {}
    for folder in (root / "DISTRIBUTIONS").read_text().split():
        project = tomllib.loads((root / folder / "pyproject.toml").read_text())["project"]
        for group, names in project.get("entry-points", {}).items():
            for name in names:
                declared[(group, name)] = project["name"]
    for (group, name), dist in registry.PROVIDERS.items():
        if group == registry.COMMANDS_GROUP:
            continue
        assert declared.get((group, name)) == dist, (group, name)


def test_broken_plugin_is_reported_not_hidden(monkeypatch):
    """An entry point that fails to import is reported with its error, not as 'not installed'."""
    broken = registry.InstalledEntryPoint(registry.RESOURCES_GROUP, "bad", "bad_pkg:Res", "bad-dist", "1.0",
                                          failing_import(ImportError("boom")))
    monkeypatch.setitem(registry._cache, registry.RESOURCES_GROUP, {"bad": broken})
    with pytest.raises(ConfigError, match="bad-dist failed to import: ImportError: boom"):
        registry.resolve_resource("bad")


def test_resources_built_from_config_name_bad_key():
    """A resource config without cls names the key in the error."""
    with pytest.raises(ConfigError, match="sandbox.kv.cls"):
        SandboxResources(None, {"kv": {"cls": "nosuch_mod.X"}})


def test_a_broken_plugin_is_recorded_not_logged_by_stevedore(fake_groups, caplog):
    """stevedore's own "Could not load" error is not logged: the loader records the import error instead."""
    fake_groups[registry.RESOURCES_GROUP] = [FakeEntryPoint("bad", "bad_pkg:Res", error=ImportError("gone"))]
    with caplog.at_level("DEBUG", logger="stevedore"), pytest.raises(ConfigError, match="ImportError: gone"):
        registry.resolve_resource("bad")
    assert not [r for r in caplog.records if r.name.startswith("stevedore") and r.levelname == "ERROR"]


def test_stevedore_caches_outside_the_users_home():
    """The tests' entry point scans are cached in a folder of their own, not ~/.cache/python-entrypoints."""
    import os

    from stevedore import _cache
    assert not _cache._c._dir.startswith(os.path.expanduser("~/.cache"))
    registry.clear_cache()
    assert "sandbox" in registry.installed(registry.WORKERS_GROUP)
    # stevedore writes no cache at all for an interpreter under /tmp (CI clones may live there).
    if not _cache._c._disable_caching:
        assert os.listdir(_cache._c._dir)
