"""``vxsandbox chat``: the example apps played from a script, on the embedded defaults (vxsandbox_js.chat)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.admin import delete_queues
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import hooks_with
from vxsandbox_js import StandaloneJsFileSandbox
from vxsandbox_js.chat import ChatError, ChatSession, build_session, find_app, make_parser, run_chat

from .helpers import EXAMPLES, ROOT

pytestmark = pytest.mark.node

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
VUMIGO_APP = os.path.join(EXAMPLES, "vumigo_app")
RAW_APP = os.path.join(EXAMPLES, "raw_app")

VUMIGO_TRANSCRIPT = """\
[new session]
app> Welcome to Tea Time! What would you like?
     1. Tea
     2. Coffee
you> 1
app> Milk with your tea?
     1. Yes please
     2. No thanks
you> 1
app> One tea with milk coming up. Thank you!
[session closed by the app; type anything to dial again, /quit to leave]
you> /new
[new session]
app> Welcome to Tea Time! What would you like?
     1. Tea
     2. Coffee
you> 2
app> Milk with your coffee?
     1. Yes please
     2. No thanks
you> 2
app> One coffee black coming up. Thank you!
[session closed by the app; type anything to dial again, /quit to leave]
"""


def needs_vumigo() -> None:
    if not os.path.isdir(os.path.join(VUMIGO_APP, "node_modules", "vumigo_v02")):
        pytest.fail("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")


def test_chat_command_prints_the_vumigo_transcript(tmp_path) -> None:
    """``vxsandbox chat examples/vumigo_app --script FILE`` prints the whole two-session transcript."""
    needs_vumigo()
    script = tmp_path / "script.txt"
    script.write_text("# order a tea with milk, then a black coffee\n1\n1\n/new\n2\n2\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "vxsandbox_core.cli", "chat", "examples/vumigo_app", "--script", str(script),
         "--config-json", '{"name": "Tea Time"}'],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == VUMIGO_TRANSCRIPT
    # The folder's package.json chose the file, and chat says so (and nothing else).
    package = os.path.join("examples", "vumigo_app", "package.json")
    assert done.stderr == (f"vxsandbox chat: playing {os.path.join(VUMIGO_APP, 'app.js')} "
                           f"({package} names it as 'main')\n")


def test_bad_config_json_is_a_usage_error() -> None:
    """Malformed ``--config-json`` exits 2 with one line saying so."""
    done = subprocess.run(
        [sys.executable, "-m", "vxsandbox_core.cli", "chat", RAW_APP, "--script", os.devnull,
         "--config-json", "{nope"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--config-json is not JSON" in done.stderr


def test_find_app_takes_a_folder_or_a_file(tmp_path) -> None:
    """A folder means its package.json ``main`` (else app.js); a missing file is a chat error."""
    assert find_app(VUMIGO_APP) == (os.path.join(VUMIGO_APP, "app.js"),
                                    f"{os.path.join(VUMIGO_APP, 'package.json')} names it as 'main'")
    assert find_app(RAW_APP) == (os.path.join(RAW_APP, "app.js"), None)
    assert find_app(os.path.join(RAW_APP, "app.js")) == (os.path.join(RAW_APP, "app.js"), None)
    (tmp_path / "package.json").write_text('{"main": "lib/main.js"}')
    with pytest.raises(ChatError, match="lib/main.js.*package.json names it as 'main'"):
        find_app(str(tmp_path))


def test_find_app_prefers_go_app_js(tmp_path) -> None:
    """A folder with go-app.js (the toolkit's built bundle) plays it, whatever package.json names."""
    (tmp_path / "package.json").write_text('{"main": "app.js"}')
    (tmp_path / "app.js").write_text("")
    (tmp_path / "go-app.js").write_text("")
    assert find_app(str(tmp_path)) == (str(tmp_path / "go-app.js"), None)


class ChatSessionTests(TestCase):

    async def play(self, *argv: str, lines: list[str]) -> str:
        out = io.StringIO()
        args = make_parser().parse_args([*argv, "--script", os.devnull])
        session: ChatSession = build_session(args, out)
        await run_chat(session, lines, None)
        return out.getvalue()

    async def test_raw_app_session_close_and_redial(self) -> None:
        """The raw example counts in the kv store; 'bye' closes the session and the next line dials again."""
        text = await self.play(RAW_APP, lines=["héllo ☕", "bye", "again", "/close", "/close", "/quit", "ignored"])
        assert text == (
            "[new session]\n"
            "app> Hello! Say anything and I will count it. Say \"bye\" to leave.\n"
            "you> héllo ☕\n"
            "app> Message 2: you said \"héllo ☕\" (7 characters).\n"
            "you> bye\n"
            "app> Goodbye! You sent 3 messages.\n"
            "[session closed by the app; type anything to dial again, /quit to leave]\n"
            "you> again\n"
            "[new session]\n"
            "app> Hello! Say anything and I will count it. Say \"bye\" to leave.\n"
            "you> /close\n"
            "[session closed by you]\n"
            "you> /close\n"
            "[no session to close]\n"
            "you> /quit\n")

    async def test_sms_has_no_sessions(self) -> None:
        """Over sms each line is one message and no session is opened."""
        text = await self.play(RAW_APP, "--transport-type", "sms", lines=["one", "two"])
        assert text == ("you> one\napp> Message 1: you said \"one\" (3 characters).\n"
                        "you> two\napp> Message 2: you said \"two\" (3 characters).\n")

    async def test_failed_run_is_shown_in_the_transcript(self) -> None:
        """When the app's run fails the transcript says how, instead of going silent."""
        app = self.mktemp() + ".js"
        with open(app, "w") as f:
            f.write("api.on_inbound_message = function() { throw new Error('nope'); };\n")
        text = await self.play(app, "--transport-type", "sms", lines=["x"])
        assert text == "you> x\n[no reply: the app's run failed: exited with 1; see the log above]\n"

    async def test_a_run_without_a_reply_says_so(self) -> None:
        """A run that ends well but sends nothing is '[no reply: ...]' in the transcript, not silence."""
        app = self.mktemp() + ".js"
        with open(app, "w") as f:
            f.write("api.on_inbound_message = function() { this.done(); };\n")
        text = await self.play(app, "--transport-type", "sms", lines=["x"])
        assert text == "you> x\n[no reply: the app's run ended without sending one]\n"


def chat(*args: str, cwd: str = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VXSANDBOX_AMQP_URL"}
    return subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", "chat", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_chat_plays_the_example_worker_config(tmp_path) -> None:
    """``vxsandbox chat -c worker.yaml`` in examples/vumigo_app plays the deployed config (Redis kv -> memory)."""
    needs_vumigo()
    script = tmp_path / "script.txt"
    script.write_text("1\n1\n/new\n2\n2\n", encoding="utf-8")
    done = chat("-c", "worker.yaml", "--script", str(script), cwd=VUMIGO_APP)
    assert done.returncode == 0, done.stderr
    assert done.stdout == VUMIGO_TRANSCRIPT
    assert done.stderr == ""


@pytest.mark.distributions("vxsandbox-resources-contacts")
def test_chat_plays_the_contacts_app_with_contacts_in_memory(tmp_path) -> None:
    """contacts_app.js under ``chat -c contacts-worker.yaml``: contacts and groups (on Redis there) live in memory."""
    needs_vumigo()
    script = tmp_path / "script.txt"
    script.write_text("Zoë\nhello again\n", encoding="utf-8")
    done = chat("-c", "contacts-worker.yaml", "--script", str(script), cwd=VUMIGO_APP)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "[new session]\n"
        "app> Hello! What is your name?\n"
        "you> Zoë\n"
        "app> Thanks Zoë! Tea lovers now has 1 member(s).\n"
        "[session closed by the app; type anything to dial again, /quit to leave]\n"
        "you> hello again\n"
        "[new session]\n"
        "app> Welcome back, Zoë!\n"
        "[session closed by the app; type anything to dial again, /quit to leave]\n")


CONFIG_PROBE_APP = """\
api.on_inbound_message = function (command) {
    var msg = command.msg;
    this.request('kv.incr', {key: 'n', amount: 1}, function (counted) {
        this.request('config.get', {key: 'translation.en'}, function (got) {
            this.request('outbound.reply_to', {
                in_reply_to: msg.message_id, continue_session: true,
                content: 'kv ' + counted.value + ', translation.en ' + got.value,
            }, function () { this.done(); });
        });
    });
};
"""


def test_chat_c_keeps_every_other_key_and_puts_stores_in_memory(tmp_path) -> None:
    """Under -c, kv on an unreachable Redis runs in memory; other config keys, timeout and sandbox_id are the file's."""
    app = tmp_path / "probe.js"
    app.write_text(CONFIG_PROBE_APP, encoding="utf-8")
    config = {
        "worker": "js-standalone", "transport_name": "probe_sms", "sandbox_id": "probe",
        "javascript_file": "probe.js", "timeout": 30,
        "sandbox": {
            "kv": {"cls": "kv", "redis_manager": {"url": "redis://127.0.0.1:1/0", "connect_timeout": 0.5}},
            "outbound": {"cls": "outbound"},
            "config": {"cls": "config", "values": {"translation.en": "hello"}},
        },
    }
    (tmp_path / "worker.yaml").write_text(json.dumps(config), encoding="utf-8")
    script = tmp_path / "script.txt"
    script.write_text("a\nb\n", encoding="utf-8")
    done = chat("-c", "worker.yaml", "--transport-type", "sms", "--script", str(script), cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "you> a\napp> kv 1, translation.en hello\nyou> b\napp> kv 2, translation.en hello\n"


def test_chat_c_refuses_a_worker_that_runs_no_javascript(tmp_path) -> None:
    """A config of the generic worker is a usage error naming the file and what chat plays."""
    (tmp_path / "worker.yaml").write_text("worker: sandbox\ntransport_name: t\n", encoding="utf-8")
    done = chat("-c", str(tmp_path / "worker.yaml"), "--script", os.devnull)
    assert done.returncode == 2
    assert done.stderr == (f"vxsandbox chat: {tmp_path / 'worker.yaml'}: worker 'sandbox' does not run "
                           "JavaScript; chat plays js, js-file and js-standalone configs\n")


@pytest.mark.rabbitmq
class ChatOverAmqpTests(TestCase):
    """``vxsandbox chat --amqp URL --transport-name NAME`` plays the transport against a worker on RabbitMQ."""

    timeout = 120

    def setUp(self) -> None:
        self.tn = f"vxchat_{uuid.uuid4().hex[:12]}"
        self.addCleanup(lambda: Deferred.fromCoroutine(self.cleanup()))

    async def cleanup(self) -> None:
        admin = AmqpBroker(AMQP_URL, connection_name=f"vxsandbox-test cleanup {self.tn}")
        await admin.connect()
        await delete_queues(admin, f"{self.tn}.inbound", f"{self.tn}.event", f"{self.tn}.outbound")
        await admin.close()

    async def chat(self, *args: str, lines: str) -> tuple[str, str, int]:
        script = self.mktemp()
        with open(script, "w", encoding="utf-8") as f:
            f.write(lines)
        env = {k: v for k, v in os.environ.items() if k != "VXSANDBOX_AMQP_URL"}
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "vxsandbox_core.cli", "chat", "--amqp", AMQP_URL, "--transport-name", self.tn,
                             "--script", script, *args], env=env)
        return out.decode("utf-8"), err.decode("utf-8"), code

    async def test_chat_with_a_running_worker(self) -> None:
        """The raw example, run by a worker consuming RabbitMQ, answers the same chat as on the embedded broker."""
        broker = AmqpBroker(AMQP_URL, connection_name=f"vxsandbox-test worker {self.tn}")
        config = {"worker": "js-standalone", "transport_name": self.tn, "sandbox_id": "chat",
                  "javascript_file": os.path.join(RAW_APP, "app.js"),
                  "sandbox": {"kv": {"cls": "kv", "backend": "memory"}, "outbound": {"cls": "outbound"}}}
        service = WorkerService(StandaloneJsFileSandbox(config, broker=broker, hooks=hooks_with()), broker)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        out, err, code = await self.chat(lines="hi\nbye\n")
        assert code == 0, err
        assert out == (
            "[new session]\n"
            "app> Hello! Say anything and I will count it. Say \"bye\" to leave.\n"
            "you> hi\n"
            "app> Message 2: you said \"hi\" (2 characters).\n"
            "you> bye\n"
            "app> Goodbye! You sent 3 messages.\n"
            "[session closed by the app; type anything to dial again, /quit to leave]\n")

    async def test_no_worker_is_no_reply_with_the_reason(self) -> None:
        """With nothing consuming the transport's inbound queue the transcript says so after --timeout."""
        out, err, code = await self.chat("--timeout", "1", "--transport-type", "sms", lines="hi\n")
        assert code == 0, err
        assert out == (f"you> hi\n[no reply: nothing on {self.tn}.outbound in reply within 1s "
                       f"(is a worker consuming {self.tn}.inbound?)]\n")
