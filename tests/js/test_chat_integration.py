"""``vxsandbox chat``: the example apps played from a script, on the embedded defaults (vxsandbox_js.chat)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_js.chat import ChatError, ChatSession, build_session, find_app, make_parser, run_chat

from .helpers import EXAMPLES, ROOT

pytestmark = pytest.mark.node

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
