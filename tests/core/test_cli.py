"""Tests for vxsandbox_core.cli: the vxsandbox command, run as a real subprocess where it matters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

import vxsandbox_core
from vxsandbox_core import cli
from vxsandbox_core.testing import echo_worker_config


def vxsandbox(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("VXSANDBOX_AMQP_URL", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def write(tmp_path: Path, config: Any, name: str = "worker.yaml") -> str:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return str(path)


@pytest.fixture
def good(tmp_path: Path) -> str:
    config = echo_worker_config("cli_transport", send_to={"sms": {"transport_name": "sms_out"}})
    config["sandbox"]["cfg"] = {"cls": "config"}
    return write(tmp_path, config)


class TestCheck:
    def test_good_config(self, good: str) -> None:
        """check on a good config prints what would run and exits 0."""
        result = vxsandbox("check", "-c", good)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "worker: sandbox -> vxsandbox_core.worker:Sandbox (vxsandbox-core" in out
        assert "resource cfg: config -> vxsandbox_core.builtins.config:ConfigResource" in out
        assert "consumes: cli_transport.inbound, cli_transport.event (prefetch 20)" in out
        assert "publishes: cli_transport.outbound, sms_out.outbound" in out
        assert "broker: amqp://guest@127.0.0.1:5672/%2F" in out
        assert "OK" in out

    def test_every_error_reported(self, tmp_path: Path) -> None:
        """check lists every error (unknown cls, wrong type, missing transport) and exits 1."""
        config = echo_worker_config("x", timeout="soon")
        del config["transport_name"]
        config["sandbox"]["nope"] = {"cls": "no_such_resource"}
        config["sandbox"]["kaput"] = {"cls": "no_such_pkg.mod:Thing"}
        result = vxsandbox("check", "-c", write(tmp_path, config))
        assert result.returncode == 1
        err = result.stderr
        assert "'sandbox.nope.cls'" in err and "'no_such_resource' is not an installed resource" in err
        assert "'sandbox.kaput.cls'" in err and "cannot import" in err
        assert "'timeout'" in err and "expected" in err
        assert "'transport_name'" in err
        assert "Traceback" not in err

    def test_errors_of_every_level_in_one_run(self, tmp_path: Path) -> None:
        """check reports misspelled and wrong keys at the top level and in every resource at once."""
        config = echo_worker_config("x", timout=5, metrics_prot=9100, recv_limit="big")
        config["sandbox"]["kv"] = {"cls": "kv", "keys_per_usr": 5, "redis_manger": {"db": 3}}
        config["sandbox"]["log"] = {"cls": "log", "max_lenght": 100}
        result = vxsandbox("check", "-c", write(tmp_path, config))
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert sorted(errors) == sorted([
            "error: config key 'timout': is not a config key here; did you mean 'timeout'?",
            "error: config key 'metrics_prot': is not a config key here; did you mean 'metrics_port'?",
            "error: config key 'recv_limit': expected an integer, got 'big'",
            "error: config key 'sandbox.kv.keys_per_usr': is not a config key here; did you mean 'keys_per_user'?",
            "error: config key 'sandbox.kv.redis_manger': is not a config key here; did you mean 'redis_manager'?",
            "error: config key 'sandbox.log.max_lenght': is not a config key here; did you mean 'max_length'?",
        ])
        assert result.stderr.rstrip().endswith(": 6 error(s)")

    def test_deprecation_warnings_printed(self, tmp_path: Path) -> None:
        """check accepts an old Vumi key and prints its deprecation warning."""
        config = echo_worker_config("x", worker_name="old_app")
        result = vxsandbox("check", "-c", write(tmp_path, config))
        assert result.returncode == 0, result.stderr
        assert "warning: config key 'worker_name' is deprecated: ignored" in result.stderr

    def test_worker_class(self, tmp_path: Path) -> None:
        """--worker-class names the worker of a config that names none (the old twistd way)."""
        config = echo_worker_config("x")
        assert "worker" not in config
        path = write(tmp_path, config)
        result = vxsandbox("check", "-c", path, "--worker-class", "vxsandbox.worker.Sandbox")
        assert result.returncode == 0, result.stderr
        assert "worker: vxsandbox.worker.Sandbox -> vxsandbox_core.worker:Sandbox" in result.stdout

    def test_run_worker_class(self, tmp_path: Path) -> None:
        """run --worker-class starts the named worker for a config that names none."""
        config = echo_worker_config("x")
        proc = subprocess.Popen([sys.executable, "-m", "vxsandbox_core.cli", "run", "-c", write(tmp_path, config),
                                 "--worker-class", "vumi.application.sandbox.Sandbox",
                                 "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"],
                                stderr=subprocess.PIPE, text=True)
        started = ""
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not started:
                line = proc.stderr.readline()
                started = line if "starting worker" in line else ""
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "starting worker vumi.application.sandbox.Sandbox (Sandbox) for transport x" in started

    @pytest.mark.parametrize("command", ["run", "check"])
    def test_worker_class_disagreeing_with_the_file(self, tmp_path: Path, command: str) -> None:
        """--worker-class naming another worker than the file's is an error, not a silent choice."""
        path = write(tmp_path, echo_worker_config("x", worker="sandbox"))
        result = vxsandbox(command, "-c", path, "--worker-class", "js")
        assert result.returncode in (1, 2)
        assert "'worker': is 'sandbox' in the file but --worker-class says 'js'" in result.stderr

    @pytest.mark.parametrize("command", ["run", "check"])
    def test_js_keys_without_worker_refused(self, tmp_path: Path, command: str) -> None:
        """A config with javascript_file and no worker is refused instead of running the generic worker."""
        config = echo_worker_config("x", javascript_file="app.js", app_context="{}")
        assert "worker" not in config
        result = vxsandbox(command, "-c", write(tmp_path, config))
        assert result.returncode in (1, 2)
        assert "config key 'javascript_file': only the JavaScript workers read 'javascript_file'" in result.stderr
        assert "config key 'app_context': only the JavaScript workers read" in result.stderr
        assert "pass --worker-class" in result.stderr

    def test_unknown_worker(self, tmp_path: Path) -> None:
        """An unresolvable worker name is an error naming the key."""
        config = echo_worker_config("x", worker="nonexistent-worker")
        result = vxsandbox("check", "-c", write(tmp_path, config))
        assert result.returncode == 1
        assert "config key 'worker'" in result.stderr

    def test_missing_executable(self, tmp_path: Path) -> None:
        """Building the worker finds a missing executable without running anything."""
        config = echo_worker_config("x", executable="/nonexistent/program")
        result = vxsandbox("check", "-c", write(tmp_path, config))
        assert result.returncode == 1
        assert "'executable'" in result.stderr

    def test_url_from_environment_and_option(self, good: str) -> None:
        """VXSANDBOX_AMQP_URL overrides the config and --amqp-url overrides both."""
        env = {"VXSANDBOX_AMQP_URL": "amqp://u:secret@rabbit.example:5673/tea"}
        result = vxsandbox("check", "-c", good, env=env)
        assert "broker: amqp://u@rabbit.example:5673/tea" in result.stdout
        assert "secret" not in result.stdout
        result = vxsandbox("check", "-c", good, "--amqp-url", "amqp://a:b@h2/", env=env)
        assert "broker: amqp://a@h2:5672/%2F" in result.stdout

    def test_bad_url(self, good: str) -> None:
        """A non-amqp URL is a config error."""
        result = vxsandbox("check", "-c", good, "--amqp-url", "http://x/")
        assert result.returncode == 1
        assert "amqp://" in result.stderr


class TestBadConfigFiles:
    @pytest.mark.parametrize("command", ["run", "check"])
    @pytest.mark.parametrize("content, needle", [
        (None, "cannot read config file"),
        ("a: [1\n", "is not valid YAML at line 2"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "an empty file"),
    ])
    def test_unreadable_file(self, tmp_path: Path, command: str, content: str | None, needle: str) -> None:
        """Missing, non-YAML or non-mapping files give one line on stderr and exit 2."""
        path = str(tmp_path / "missing.yaml") if content is None else write(tmp_path, content)
        result = vxsandbox(command, "-c", path)
        assert result.returncode == 2
        assert needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr

    def test_run_wrong_types(self, tmp_path: Path) -> None:
        """run with a wrongly typed value names the key and exits 2 without a traceback."""
        result = vxsandbox("run", "-c", write(tmp_path, echo_worker_config("x", amqp_prefetch_count="lots")))
        assert result.returncode == 2
        assert "config key 'amqp_prefetch_count'" in result.stderr
        assert "Traceback" not in result.stderr


class TestHelp:
    @pytest.mark.parametrize("command", [[], ["run"], ["check"], ["resources"], ["chat"]])
    def test_help_is_plain_text(self, command: list[str]) -> None:
        """--help shows no reStructuredText markup (double backquotes, roles) from docstrings."""
        result = vxsandbox(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: vxsandbox" in result.stdout
        assert "``" not in result.stdout and ":class:" not in result.stdout
        if not command:
            assert "The vxsandbox command: run a worker on RabbitMQ" in result.stdout

    def test_plain_text(self) -> None:
        """Roles and literals lose their markup; other text is kept."""
        assert cli.plain_text("The ``vxsandbox`` :class:`~a.Sandbox` and :func:`b.f` `x`") == \
            "The vxsandbox Sandbox and b.f `x`"


class TestResources:
    def test_lists_installed_plugins(self) -> None:
        """resources lists resource and worker plugins with class, distribution and version."""
        result = vxsandbox("resources")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["KIND", "NAME", "CLASS", "DISTRIBUTION", "VERSION"]
        rows = {(r.split()[0], r.split()[1]): r.split() for r in lines[1:] if not r.startswith(" ")}
        assert rows[("worker", "sandbox")][2:] == ["vxsandbox_core.worker:Sandbox", "vxsandbox-core",
                                                  vxsandbox_core.__version__]
        assert rows[("resource", "config")][3] == "vxsandbox-core"

    def test_json_output(self) -> None:
        """--json gives the same rows as objects, including import errors."""
        result = vxsandbox("resources", "--json")
        rows = json.loads(result.stdout)
        sandbox = next(r for r in rows if r["kind"] == "worker" and r["name"] == "sandbox")
        assert sandbox == {"kind": "worker", "name": "sandbox", "class": "vxsandbox_core.worker:Sandbox",
                           "distribution": "vxsandbox-core", "version": vxsandbox_core.__version__, "error": ""}

    def test_import_errors_shown(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """A plugin that fails to import is listed with its error and the exit status is 1."""
        from vxsandbox_core import registry
        broken = registry.Plugin(registry.RESOURCES_GROUP, "broken", "broken_pkg:Thing", "broken-dist", "9",
                                 "ModuleNotFoundError: No module named 'broken_pkg'", None)
        monkeypatch.setattr(registry, "_managers", {registry.RESOURCES_GROUP: {"broken": broken},
                                                    registry.WORKERS_GROUP: {}})
        code = cli.cmd_resources(cli.make_parser().parse_args(["resources"]))
        out = capsys.readouterr().out
        assert code == 1
        assert "broken_pkg:Thing" in out and "import error: ModuleNotFoundError" in out


class TestChat:
    def test_needs_vxsandbox_js(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """Without vxsandbox_js.chat, chat says what to install and exits 2."""
        monkeypatch.setitem(sys.modules, "vxsandbox_js.chat", None)
        assert cli.main(["chat", "app.js"]) == 2
        assert "pip install vxsandbox-js" in capsys.readouterr().err

    def test_passes_remaining_arguments(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """chat hands every argument after 'chat' to vxsandbox_js.chat.main and returns its status."""
        seen: list[list[str]] = []
        fake = types.ModuleType("vxsandbox_js.chat")
        fake.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "vxsandbox_js.chat", fake)
        assert cli.main(["chat", "app.js", "--from", "+27", "-c", "x.yaml"]) == 3
        assert seen == [["app.js", "--from", "+27", "-c", "x.yaml"]]


class TestLogging:
    def test_json_logs_and_sigterm_while_connecting(self, good: str) -> None:
        """With --log-format json every stderr line is a JSON object; SIGTERM before the broker answers exits 0."""
        proc = subprocess.Popen([sys.executable, "-m", "vxsandbox_core.cli", "run", "-c", good,
                                 "--log-format", "json", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F"],
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            lines: list[str] = []
            assert proc.stderr is not None
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                lines.append(line)
                if "cannot connect" in line:
                    break
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0
        entries = [json.loads(line) for line in lines + rest.splitlines() if line.strip()]
        assert any(e["level"] == "warning" and "cannot connect to amqp://guest@127.0.0.1:1/%2F" in e["message"]
                   for e in entries)
        assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
