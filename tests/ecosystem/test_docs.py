"""The documentation: builds with no warnings, and its generated references miss no config key or hook."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core import Config, Field, Sandbox
from vxsandbox_core.plugins import build_plugin_manager
from vxsandbox_core.registry import LEGACY_NAMES, RESOURCES_GROUP, WORKERS_GROUP, installed
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message, python_worker_config

from .conftest import ROOT

DOCS = ROOT / "docs"


def load_gen() -> ModuleType:
    """docs/gen.py, the generator the MkDocs build uses."""
    spec = importlib.util.spec_from_file_location("vxsandbox_docs_gen", DOCS / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by `mkdocs build --strict`, as `make docs` builds it."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """The text of a built page, tags removed and entities decoded."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def sections(reference: str) -> dict[str, str]:
    """The config reference split into {class path: its section}."""
    parts = re.split(r"^## ", reference, flags=re.M)[1:]
    found = {}
    for part in parts:
        m = re.search(r"`([\w.]+)`", part)
        assert m is not None, part[:80]
        found[m.group(1)] = part
    return found


def missing_config_keys(reference: str, classes: list[type]) -> list[str]:
    """Every 'Class' or 'Class.key' of ``classes`` that the reference does not list."""
    listed = sections(reference)
    missing = []
    for cls in classes:
        section = listed.get(f"{cls.__module__}.{cls.__qualname__}")
        if section is None:
            missing.append(cls.__qualname__)
            continue
        missing += [f"{cls.__qualname__}.{f.name}" for f in cls.all_fields() if f"| `{f.name}` |" not in section]
    return missing


def every_config_class() -> list[type]:
    """The CONFIG_CLASS of every installed worker and resource of ours, and every Config subclass in our packages."""
    gen = load_gen()
    gen.import_all()
    classes: set[type] = set()
    for group in (WORKERS_GROUP, RESOURCES_GROUP):
        for plugin in installed(group).values():
            cls = getattr(plugin.plugin, "CONFIG_CLASS", None)
            if cls is not None and plugin.plugin.__module__.split(".")[0] in gen.PACKAGES:
                classes.add(cls)
    todo = list(Config.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.split(".")[0] in gen.PACKAGES:
            classes.add(cls)
    return sorted(classes, key=lambda c: c.__qualname__)


def test_docs_build_without_warnings(site: Path) -> None:
    """mkdocs build --strict succeeds and produces every page of the nav."""
    for page in ["getting-started", "reference/configuration", "reference/hooks", "protocol", "writing-resources",
                 "operations", "migration", "changelog", "resources/kv", "resources/http", "resources/log",
                 "resources/outbound", "resources/builtins", "resources/js", "core"]:
        assert (site / page / "index.html").is_file(), page


def test_config_reference_lists_every_key(site: Path) -> None:
    """Every config class of every worker and resource, with every key, is in the built configuration reference."""
    classes = every_config_class()
    names = {c.__qualname__ for c in classes}
    assert {"SandboxConfig", "KVConfig", "RedisManagerConfig", "HttpClientConfig", "LoggingConfig",
            "OutboundConfig", "ConfigResourceConfig", "JsSandboxConfig", "JsFileSandboxConfig"} <= names
    reference = load_gen().config_reference()
    assert missing_config_keys(reference, classes) == []
    built = page_text(site, "reference/configuration")
    for cls in classes:
        assert cls.__qualname__ in built
        for f in cls.all_fields():
            assert f.name in built, f"{cls.__qualname__}.{f.name}"


def test_a_config_class_missing_from_the_reference_is_caught() -> None:
    """A config class added after the reference was generated is reported, as is a key it lacks."""
    reference = load_gen().config_reference()

    class LateConfig(Config):
        fields = (Field("shiny", (int,), "a key nobody documented", 1),)

    # Not one of the documented packages' modules, so no other test's discovery picks it up.
    LateConfig.__module__ = "vxsandbox_late"
    LateConfig.__qualname__ = "LateConfig"
    assert missing_config_keys(reference, [LateConfig]) == ["LateConfig"]
    from vxsandbox_core.config import SandboxConfig
    stale = reference.replace("| `metrics_port` |", "| `metricsport` |")
    assert missing_config_keys(stale, [SandboxConfig]) == ["SandboxConfig.metrics_port"]


def test_hooks_reference_documents_every_hook(site: Path) -> None:
    """Every hook spec the plugin manager knows has a section with its arguments."""
    pm = build_plugin_manager(load_entry_points=False)
    hooks = [name for name in vars(pm.hook) if not name.startswith("_")]
    assert "message_processed" in hooks
    built = page_text(site, "reference/hooks")
    for name in hooks:
        assert f"def {name}(" in built, name
        for arg in getattr(pm.hook, name).spec.argnames:
            assert f"{arg}:" in built, (name, arg)


def test_resource_pages_come_from_the_readmes(site: Path) -> None:
    """Each resource page carries its distribution README's command sections."""
    for page, readme in [("resources/kv", "vxsandbox_resources_kv"), ("resources/log", "vxsandbox_resources_log"),
                         ("resources/outbound", "vxsandbox_resources_outbound"),
                         ("resources/http", "vxsandbox_resources_http"),
                         ("resources/contacts", "vxsandbox_resources_contacts")]:
        headings = re.findall(r"^##+ (.+)$", (ROOT / readme / "README.md").read_text(), re.M)
        built = page_text(site, page)
        for heading in headings:
            assert heading.replace("`", "") in built, (page, heading)


def test_migration_lists_every_legacy_name(site: Path) -> None:
    """Every old class path that still resolves is in the migration guide."""
    built = page_text(site, "migration")
    for old in LEGACY_NAMES:
        assert old in built, old


class ProtocolExampleTests(TestCase):
    """The plain-Python sandbox shown in the protocol page works as a real child of the generic worker."""

    async def test_echo_sandbox_replies(self) -> None:
        """The example logs, replies 'echo: <content>' through outbound, and ends its run successfully."""
        example = DOCS / "src" / "examples" / "echo_sandbox.py"
        page = (DOCS / "src" / "protocol.md").read_text()
        assert "<!-- include: docs/src/examples/echo_sandbox.py python -->" in page
        broker = RecordingBroker()
        config = python_worker_config([str(example)], logging_resource="record",
                                      sandbox={"log": {"cls": "log"}, "outbound": {"cls": "outbound"}})
        worker = Sandbox(config, broker=broker, hooks=hooks_with())
        await worker.setup()
        msg = make_user_message(content="héllo")
        assert await worker.process_message(msg) == "ok"
        (reply,) = broker.messages("test_transport.outbound")
        assert reply["content"] == "echo: héllo"
        assert reply["in_reply_to"] == msg["message_id"]
        assert reply["session_event"] == "close"
        assert worker.resources.resources["record"].logs == []
