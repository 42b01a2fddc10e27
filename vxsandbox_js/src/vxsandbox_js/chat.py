"""``vxsandbox chat APP.js``: talk to a JavaScript app in the terminal, playing the user of a USSD or SMS channel.

The app runs as a ``js-file`` sandbox on the embedded defaults: the
in-memory broker (through the same service that ``vxsandbox run`` uses with
RabbitMQ), the ``kv`` resource's memory backend, ``outbound``, ``config``
(from ``--config-json``), ``metrics`` and ``log``. Every line you type is an
inbound message; the app's replies print as they are published.

USSD (the default) has sessions: chat opens one at start (``new``, as when
the user dials), lines you type continue it (``resume``), and a reply that
ends the session (``close``) ends it; the next line you type then dials
again, opening a new session with your text as the dialled string. Commands:
``/new`` opens a fresh session, ``/close`` hangs up (the app gets a
``close`` message), ``/quit`` leaves. With ``--transport-type sms`` there
are no sessions: each line is one message.

``--script FILE`` reads the lines from a file instead of the terminal (lines
starting with ``#`` are skipped) and prints the transcript, which is how the
tests and the README use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TextIO

from twisted.internet.defer import Deferred, DeferredList, DeferredQueue

from vxsandbox_core.brokers.memory import MemoryBroker
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.hookspecs import hookimpl
from vxsandbox_core.message import Message, TransportUserMessage
from vxsandbox_core.plugins import Hooks, build_plugin_manager
from vxsandbox_core.service import WorkerService

from .worker import JsFileSandbox

TRANSPORT_NAME = "chat"
EXIT_OK, EXIT_USAGE = 0, 2
COMMANDS = ("/new", "/close", "/quit")


class ChatError(Exception):
    """The chat cannot start: a bad argument, app path or config."""


def find_app(path: str) -> str:
    """The app's file: ``path`` itself, or for a folder its package.json ``main`` or ``app.js``.

    :raises ChatError: there is no such file.
    """
    if os.path.isdir(path):
        main = "app.js"
        package = os.path.join(path, "package.json")
        if os.path.isfile(package):
            try:
                with open(package, encoding="utf-8") as f:
                    main = json.load(f).get("main") or main
            except (OSError, ValueError, AttributeError) as e:
                raise ChatError(f"cannot read {package}: {e}") from None
        path = os.path.join(path, main)
    if not os.path.isfile(path):
        raise ChatError(f"no app file at {path!r} (give an app's .js file or its folder)")
    return os.path.abspath(path)


def chat_config(app: str, config_value: Any, app_context: str | None, timeout: float) -> dict[str, Any]:
    """The ``js-file`` worker config of a chat session on the embedded defaults."""
    return {
        "worker": "js-file",
        "transport_name": TRANSPORT_NAME,
        "sandbox_id": "chat",
        "javascript_file": app,
        "app_context": app_context,
        "timeout": timeout,
        "sandbox": {
            "log": {"cls": "log"},
            "kv": {"cls": "kv", "backend": "memory"},
            "outbound": {"cls": "outbound"},
            "config": {"cls": "config", "values": {"config": config_value}},
            "metrics": {"cls": "metrics"},
        },
    }


class RunWatcher:
    """A plugin that remembers why the last sandbox run failed, for the transcript."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @hookimpl
    def run_ended(self, api: Any, result: Any) -> None:
        if not result.ok:
            self.failures.append(result.describe())


class ChatSession:
    """One user talking to one app through the embedded broker.

    :param worker: the app's worker; its broker must be ``broker``.
    :param broker: the in-memory broker.
    :param out: where the transcript goes.
    :param transport_type: ``ussd`` (sessions) or ``sms`` (none).
    :param from_addr: the user's address.
    :param to_addr: the app's address (the USSD code or SMS number).
    :param echo: print the user's lines too (they were not typed on a terminal).
    """

    def __init__(self, worker: JsFileSandbox, broker: MemoryBroker, out: TextIO, watcher: RunWatcher,
                 transport_type: str = "ussd", from_addr: str = "+27820000001", to_addr: str = "*120*123#",
                 echo: bool = False) -> None:
        self.worker = worker
        self.broker = broker
        self.service = WorkerService(worker, broker, TRANSPORT_NAME)
        self.out = out
        self.watcher = watcher
        self.transport_type = transport_type
        self.from_addr = from_addr
        self.to_addr = to_addr
        self.echo = echo
        self.in_session = False

    @property
    def sessions(self) -> bool:
        return self.transport_type == "ussd"

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def start(self) -> None:
        """Start the worker on the broker and, for USSD, dial in."""
        await self.service.start()
        if self.sessions:
            await self.new_session(None)

    async def stop(self) -> None:
        await self.service.stop()

    async def send(self, content: str | None, session_event: str | None) -> None:
        """Publish one inbound message, wait for its run, and print what the app published."""
        msg = TransportUserMessage(
            to_addr=self.to_addr, from_addr=self.from_addr, transport_name=TRANSPORT_NAME,
            transport_type=self.transport_type, content=content, session_event=session_event)
        failures = len(self.watcher.failures)
        await self.broker.publish(f"{TRANSPORT_NAME}.inbound", msg.to_json().encode("utf-8"))
        if self.service.in_flight:
            await DeferredList(list(self.service.in_flight), consumeErrors=True)
        for body in self.broker.drain(f"{TRANSPORT_NAME}.outbound"):
            self.show_reply(Message.from_json(body))
        for failure in self.watcher.failures[failures:]:
            self.say(f"[the app's run failed: {failure}; see the log above]")

    def show_reply(self, reply: Message) -> None:
        content = reply.get("content") or ""
        lines = content.split("\n") or [""]
        to = "" if reply.get("to_addr") == self.from_addr else f" (to {reply.get('to_addr')})"
        self.say(f"app{to}> {lines[0]}")
        for line in lines[1:]:
            self.say(f"     {line}")
        if self.sessions and reply.get("session_event") == "close" and to == "":
            self.in_session = False
            self.say("[session closed by the app; type anything to dial again, /quit to leave]")

    async def new_session(self, content: str | None) -> None:
        if self.in_session:
            await self.close_session()
        self.in_session = True
        self.say("[new session]")
        await self.send(content, "new")

    async def close_session(self) -> None:
        self.in_session = False
        await self.send(None, "close")
        self.say("[session closed by you]")

    async def line(self, text: str) -> bool:
        """Act on one line of input; returns False when the chat should end."""
        if self.echo:
            self.say(f"you> {text}")
        command = text.strip()
        if command == "/quit":
            return False
        if command == "/new":
            await self.new_session(None) if self.sessions else self.say("[no sessions over sms]")
        elif command == "/close":
            if self.sessions and self.in_session:
                await self.close_session()
            else:
                self.say("[no session to close]")
        elif not self.sessions:
            await self.send(text, None)
        elif not self.in_session:
            await self.new_session(text)
        else:
            await self.send(text, "resume")
        return True


class _LineReader:
    """Lines typed on the terminal, as a queue the chat awaits (``None`` at end of input)."""

    def __init__(self) -> None:
        from twisted.internet import stdio
        from twisted.protocols.basic import LineReceiver

        self.queue: DeferredQueue[str | None] = DeferredQueue()
        queue = self.queue

        class Receiver(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                queue.put(line.decode("utf-8", "replace").rstrip("\r"))

            def connectionLost(self, reason: Any = None) -> None:
                queue.put(None)

        self.stdio = stdio.StandardIO(Receiver())

    def get(self) -> Deferred[str | None]:
        return self.queue.get()


async def run_chat(session: ChatSession, lines: Iterable[str] | None, prompt: Callable[[], None] | None) -> None:
    """Play ``lines`` (or, when None, what is typed on the terminal) into the session."""
    await session.start()
    try:
        if lines is not None:
            for scripted in lines:
                if not await session.line(scripted):
                    break
        else:
            reader = _LineReader()
            while True:
                if prompt is not None:
                    prompt()
                text = await reader.get()
                if text is None or not await session.line(text):
                    break
    finally:
        await session.stop()


DESCRIPTION = ("Talk to a JavaScript app in the terminal, playing the user of a USSD or SMS channel. "
               "Commands: /new (new session), /close (hang up), /quit.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add chat's own arguments to ``parser``."""
    parser.add_argument("app", help="the app's .js file, or its folder (package.json 'main', else app.js)")
    parser.add_argument("--script", metavar="FILE",
                        help="read the user's lines from FILE ('#' lines skipped) and print the transcript")
    parser.add_argument("--config-json", metavar="JSON",
                        help="the app's config (what config.get 'config' returns), as JSON; "
                             "default {\"name\": <app folder name>}")
    parser.add_argument("--transport-type", choices=("ussd", "sms"), default="ussd",
                        help="ussd has sessions (default); sms has none")
    parser.add_argument("--from", dest="from_addr", default="+27820000001", help="the user's address")
    parser.add_argument("--to", dest="to_addr", help="the app's address (default *120*123# for ussd, 12345 for sms)")
    parser.add_argument("--app-context", default="{require: require}",
                        help="trusted JS expression giving the app's extra globals (default '{require: require}')")
    parser.add_argument("--timeout", type=float, default=10, help="seconds one run may take (default 10)")
    # The transcript is the output; logs are for what went wrong unless asked for.
    parser.set_defaults(log_level="warning")
    parser.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="info",
                        help="show the app's info log lines too (default: warnings and errors only)")


def make_parser() -> argparse.ArgumentParser:
    """A parser of chat's arguments alone (``vxsandbox chat`` adds them to its subcommand)."""
    parser = argparse.ArgumentParser(prog="vxsandbox chat", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def build_session(args: argparse.Namespace, out: TextIO) -> ChatSession:
    """The worker, broker and session ``args`` describe.

    :raises ChatError: the app or its config is unusable.
    """
    app = find_app(args.app)
    if args.config_json is None:
        name = os.path.basename(os.path.dirname(app)) or "app"
        config_value: Any = {"name": name}
    else:
        try:
            config_value = json.loads(args.config_json)
        except ValueError as e:
            raise ChatError(f"--config-json is not JSON: {e}") from None
    config = chat_config(app, config_value, args.app_context, args.timeout)
    watcher = RunWatcher()
    pm = build_plugin_manager()
    pm.register(watcher)
    broker = MemoryBroker()
    try:
        worker = JsFileSandbox(config, broker=broker, hooks=Hooks(pm))
    except ConfigError as e:
        raise ChatError(str(e)) from None
    to_addr = args.to_addr or ("*120*123#" if args.transport_type == "ussd" else "12345")
    # Lines that were not typed on this terminal are echoed, so the transcript shows both sides.
    echo = args.script is not None or not sys.stdin.isatty()
    return ChatSession(worker, broker, out, watcher, args.transport_type, args.from_addr, to_addr, echo=echo)


def run_command(args: argparse.Namespace) -> int | Awaitable[int]:
    """``vxsandbox chat``: build the session (2 on a bad argument), then chat on the reactor."""
    # The embedded broker and service narrate their start and stop; noise in a chat even with -v.
    for name in ("vxsandbox.service", "vxsandbox.broker.memory"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = sys.stdout
    lines: list[str] | None = None
    try:
        if args.script is not None:
            try:
                with open(args.script, encoding="utf-8") as f:
                    lines = [line for line in f.read().splitlines() if not line.startswith("#")]
            except OSError as e:
                raise ChatError(f"cannot read --script {args.script!r}: {e.strerror or e}") from None
        session = build_session(args, out)
    except ChatError as e:
        print(f"vxsandbox chat: {e}", file=sys.stderr)
        return EXIT_USAGE

    interactive = lines is None and sys.stdin.isatty()
    if lines is None:
        kind = "USSD session" if session.sessions else "SMS conversation"
        session.say(f"Chatting with {session.worker.config.javascript_file} as {session.from_addr} "
                    f"({kind}; /new, /close, /quit).")

    def prompt() -> None:
        if interactive:
            out.write("you> ")
            out.flush()

    async def chat() -> int:
        await run_chat(session, lines, prompt)
        return EXIT_OK
    return chat()
