"""Tests for the JavaScript workers' config classes (vxsandbox_js.worker), without running node."""

from __future__ import annotations

import pytest

from vxsandbox_core.errors import ConfigError
from vxsandbox_js.worker import DEFAULT_MAX_OLD_SPACE_SIZE, NODE_RLIMITS, JsFileSandboxConfig, JsSandboxConfig


def test_javascript_is_required() -> None:
    """The ``js`` worker cannot start without its app's code."""
    with pytest.raises(ConfigError, match="'javascript'"):
        JsSandboxConfig({"sandbox_id": "a"})


def test_log_resource_and_logging_resource_default() -> None:
    """A ``log`` resource is added when absent and receives the app's log lines by default."""
    config = JsSandboxConfig({"javascript": "1", "sandbox": {"kv": {"cls": "kv"}}})
    assert config.sandbox["log"] == {"cls": "log"}
    assert config.sandbox["kv"] == {"cls": "kv"}
    assert config.logging_resource == "log"
    assert JsSandboxConfig({"javascript": "1"}).sandbox == {"log": {"cls": "log"}}


def test_configured_log_resource_is_kept() -> None:
    """A ``log`` resource the config names itself is not replaced."""
    config = JsSandboxConfig({"javascript": "1", "sandbox": {"log": {"cls": "my.mod:Log", "x": 1}}})
    assert config.sandbox["log"] == {"cls": "my.mod:Log", "x": 1}


def test_hardening_defaults() -> None:
    """The heap is bounded and the permission model is on unless the config says otherwise."""
    config = JsSandboxConfig({"javascript": "1"})
    assert config.max_old_space_size == DEFAULT_MAX_OLD_SPACE_SIZE
    assert config.node_permissions is True
    assert config.allow_fs_read == []


def test_bad_heap_size_is_a_config_error() -> None:
    """``max_old_space_size`` must be a positive number of MiB."""
    with pytest.raises(ConfigError, match="max_old_space_size"):
        JsSandboxConfig({"javascript": "1", "max_old_space_size": 0})


def test_node_rlimits_let_node_start() -> None:
    """The Node defaults lift the seed's address-space and file limits Node cannot start under."""
    assert NODE_RLIMITS["RLIMIT_AS"] >= 800 * 1024 * 1024
    assert NODE_RLIMITS["RLIMIT_NOFILE"] >= 20


def test_javascript_file_must_exist(tmp_path) -> None:
    """The ``js-file`` worker checks its file exists and stores its absolute path."""
    with pytest.raises(ConfigError, match="javascript_file"):
        JsFileSandboxConfig({"javascript_file": str(tmp_path / "missing.js")})
    app = tmp_path / "app.js"
    app.write_text("1")
    config = JsFileSandboxConfig({"javascript_file": str(app)})
    assert config.javascript_file == str(app)
    assert config.javascript is None


def test_legacy_worker_names_resolve() -> None:
    """The seed's and old Vumi's class paths name the JavaScript workers and resource."""
    from vxsandbox_core.registry import resolve_resource, resolve_worker
    from vxsandbox_js import JsFileSandbox, JsSandbox, JsSandboxResource, StandaloneJsFileSandbox

    assert resolve_worker("vxsandbox.worker.JsSandbox") is JsSandbox
    assert resolve_worker("vxsandbox.worker.JsFileSandbox") is JsFileSandbox
    assert resolve_worker("vxsandbox.worker.StandaloneJsFileSandbox") is StandaloneJsFileSandbox
    assert resolve_worker("vumi.application.sandbox.JsSandbox") is JsSandbox
    assert resolve_worker("js") is JsSandbox
    assert resolve_worker("js-file") is JsFileSandbox
    assert resolve_worker("js-standalone") is StandaloneJsFileSandbox
    assert resolve_resource("js") is JsSandboxResource
    assert resolve_resource("vxsandbox.resources.js.JsSandboxResource") is JsSandboxResource
