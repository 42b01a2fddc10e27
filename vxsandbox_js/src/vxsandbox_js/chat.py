"""``vxsandbox chat APP.js``: talk to a JavaScript app in the terminal, playing the user of a USSD or SMS channel.

Three ways to meet the app:

- ``vxsandbox chat APP`` runs it as a ``js-file`` sandbox on the embedded
  defaults: the in-memory broker (through the same service that
  ``vxsandbox run`` uses with RabbitMQ), the ``kv`` resource's memory
  backend, ``outbound``, ``config`` (from ``--config-json``), ``metrics`` and
  ``log``. APP is a file or a folder (its ``go-app.js``, else its
  package.json ``main``, else ``app.js``).
- ``vxsandbox chat -c worker.yaml [APP]`` runs the worker config as it will
  be deployed, on the embedded defaults: the in-memory broker, and every
  resource that has a ``backend`` option (kv, contacts, groups, optout) on
  its memory backend; every other resource (http included) and every other
  key as configured. APP, when given, replaces ``javascript_file``.
- ``vxsandbox chat --amqp URL --transport-name NAME`` runs no app: it plays
  the transport's side against a worker already running on RabbitMQ
  (:class:`vxsandbox_core.send.TransportSide`).

Every line you type is an inbound message; the app's replies print as they
are published. When a message gets no reply the transcript says why
(``[no reply: ...]``).

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
import copy
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TextIO

from twisted.internet.defer import Deferred, DeferredList, DeferredQueue

from vxsandbox_core.brokers.memory import MemoryBroker
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.hookspecs import hookimpl
from vxsandbox_core.message import Message, TransportUserMessage
from vxsandbox_core.plugins import Hooks, build_plugin_manager
from vxsandbox_core.send import Exchange, SendError, amqp_transport_side
from vxsandbox_core.service import WorkerService

from .worker import JsFileSandbox, JsSandbox

TRANSPORT_NAME = "chat"
EXIT_OK, EXIT_USAGE = 0, 2
COMMANDS = ("/new", "/close", "/quit")


class ChatError(Exception):
    """The chat cannot start: a bad argument, app path or config."""


#: in a folder, the file vumigo_v02 projects build their app into, played before anything else
GO_APP = "go-app.js"


def find_app(path: str) -> tuple[str, str | None]:
    """The app's file and, when it came from package.json, a note saying so.

    ``path`` itself when a file; for a folder its ``go-app.js`` (the bundle a
    vumigo_v02 project builds and deploys), else its package.json ``main``,
    else ``app.js``.

    :raises ChatError: there is no such file.
    """
    note = None
    if os.path.isdir(path):
        main = "app.js"
        package = os.path.join(path, "package.json")
        if os.path.isfile(os.path.join(path, GO_APP)):
            main = GO_APP
        elif os.path.isfile(package):
            try:
                with open(package, encoding="utf-8") as f:
                    named = json.load(f).get("main")
            except (OSError, ValueError, AttributeError) as e:
                raise ChatError(f"cannot read {package}: {e}") from None
            if named:
                main = named
                note = f"{package} names it as 'main'"
        path = os.path.join(path, main)
    if not os.path.isfile(path):
        raise ChatError(f"no app file at {path!r}" + (f" ({note})" if note else "")
                        + " (give an app's .js file or its folder)")
    return os.path.abspath(path), note


def memory_backends(sandbox: dict[str, Any]) -> list[str]:
    """Switch every resource in ``sandbox`` that has a ``backend`` option to ``memory``; returns their names."""
    from vxsandbox_core.registry import resolve_resource
    switched = []
    for name, rconfig in sandbox.items():
        if not isinstance(rconfig, dict):
            continue
        try:
            cls = resolve_resource(rconfig.get("cls"), key=f"sandbox.{name}.cls")
        except ConfigError:
            continue  # building the worker reports it, with every other error
        options = getattr(cls, "CONFIG_CLASS", None)
        if options is not None and any(f.name == "backend" for f in options.all_fields()):
            rconfig["backend"] = "memory"
            switched.append(name)
    return switched


def deployed_config(raw: dict[str, Any], path: str, app: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """The worker config ``raw`` (read from ``path``) as chat plays it: the same, on the embedded defaults.

    :raises ChatError: the config's worker is not a JavaScript worker.
    """
    from vxsandbox_core.registry import resolve_worker
    config = copy.deepcopy(raw)
    name = config.get("worker", "sandbox")
    try:
        worker_cls = resolve_worker(name)
    except ConfigError as e:
        raise ChatError(f"{path}: {e}") from None
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, JsSandbox)):
        raise ChatError(f"{path}: worker {name!r} does not run JavaScript; chat plays js, js-file and "
                        "js-standalone configs")
    if app is not None:
        config["javascript_file"] = app
        if not issubclass(worker_cls, JsFileSandbox):
            config["worker"] = "js-file"
    config["transport_name"] = config.get("transport_name") or TRANSPORT_NAME
    config["sandbox_id"] = config.get("sandbox_id") or "chat"
    if args.timeout is not None:
        config["timeout"] = args.timeout
    if args.app_context is not None:
        config["app_context"] = args.app_context
    sandbox = config.get("sandbox")
    if isinstance(sandbox, dict):
        memory_backends(sandbox)
        if args.config_json is not None:
            resource = sandbox.setdefault("config", {"cls": "config"})
            if isinstance(resource, dict):
                values = resource.setdefault("values", {})
                if isinstance(values, dict):
                    values["config"] = parse_config_json(args.config_json)
    return config


def parse_config_json(text: str) -> Any:
    """The value of ``--config-json``.

    :raises ChatError: it is not JSON.
    """
    try:
        return json.loads(text)
    except ValueError as e:
        raise ChatError(f"--config-json is not JSON: {e}") from None


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
    """A plugin that remembers why sandbox runs failed, for the transcript."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @hookimpl
    def run_ended(self, api: Any, result: Any) -> None:
        if not result.ok:
            self.failures.append(result.describe())


class Peer(Protocol):
    """The other end of a chat: an app on the embedded broker, or a worker over RabbitMQ."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def exchange(self, message: TransportUserMessage, timeout: float, wait: bool = True) -> Exchange: ...


class EmbeddedPeer:
    """A worker on the in-memory broker: each message's run finishes before its exchange returns.

    :param worker: the app's worker; its broker must be ``broker``.
    """

    def __init__(self, worker: JsSandbox, broker: MemoryBroker, watcher: RunWatcher, transport_name: str) -> None:
        self.worker = worker
        self.broker = broker
        self.watcher = watcher
        self.transport_name = transport_name
        self.service = WorkerService(worker, broker, transport_name)

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def exchange(self, message: TransportUserMessage, timeout: float, wait: bool = True) -> Exchange:
        """Publish ``message``, wait for its run, and collect what the app published (``timeout`` is the worker's)."""
        failures = len(self.watcher.failures)
        await self.broker.publish(f"{self.transport_name}.inbound", message.to_json().encode("utf-8"))
        if self.service.in_flight:
            await DeferredList(list(self.service.in_flight), consumeErrors=True)
        result = Exchange(message, [Message.from_json(body)
                                    for body in self.broker.drain(f"{self.transport_name}.outbound")])
        failed = [f"the app's run failed: {failure}; see the log above"
                  for failure in self.watcher.failures[failures:]]
        if result.replies or not wait:
            result.notes.extend(failed)
        elif failed:
            result.no_reply = "; ".join(failed)
        else:
            result.no_reply = "the app's run ended without sending one"
        return result


class ChatSession:
    """One user talking to one app: through the embedded broker, or to a worker over RabbitMQ.

    :param peer: where messages go and replies come from.
    :param out: where the transcript goes.
    :param transport_name: the transport the messages claim to come from.
    :param transport_type: ``ussd`` (sessions) or ``sms`` (none).
    :param from_addr: the user's address.
    :param to_addr: the app's address (the USSD code or SMS number).
    :param echo: print the user's lines too (they were not typed on a terminal).
    :param timeout: seconds to wait for a reply from a worker over RabbitMQ.
    """

    def __init__(self, peer: Peer, out: TextIO, transport_name: str = TRANSPORT_NAME,
                 transport_type: str = "ussd", from_addr: str = "+27820000001", to_addr: str = "*120*123#",
                 echo: bool = False, timeout: float = 10) -> None:
        self.peer = peer
        self.out = out
        self.transport_name = transport_name
        self.transport_type = transport_type
        self.from_addr = from_addr
        self.to_addr = to_addr
        self.echo = echo
        self.timeout = timeout
        self.in_session = False

    @property
    def sessions(self) -> bool:
        return self.transport_type == "ussd"

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def start(self) -> None:
        """Start the peer and, for USSD, dial in."""
        await self.peer.start()
        if self.sessions:
            await self.new_session(None)

    async def stop(self) -> None:
        await self.peer.stop()

    async def send(self, content: str | None, session_event: str | None) -> None:
        """Send one inbound message and print what came back, or why nothing did (a hang-up expects nothing)."""
        msg = TransportUserMessage(
            to_addr=self.to_addr, from_addr=self.from_addr, transport_name=self.transport_name,
            transport_type=self.transport_type, content=content, session_event=session_event)
        exchange = await self.peer.exchange(msg, self.timeout, wait=session_event != "close")
        for reply in exchange.replies:
            self.show_reply(reply)
        for note in exchange.notes:
            self.say(f"[{note}]")
        if exchange.no_reply is not None:
            self.say(f"[no reply: {exchange.no_reply}]")

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
    parser.add_argument("app", nargs="?",
                        help="the app's .js file, or its folder (go-app.js, else package.json 'main', else app.js); "
                             "with -c, replaces the config's javascript_file")
    parser.add_argument("-c", "--config", metavar="WORKER_YAML",
                        help="play this worker config as deployed, on the embedded broker with kv, contacts, "
                             "groups and optout in memory (every other resource as configured)")
    parser.add_argument("--amqp", metavar="URL",
                        help="run no app: play the transport's side against a worker running on RabbitMQ at URL "
                             "(with --transport-name)")
    parser.add_argument("--transport-name", help="with --amqp: the running worker's transport_name")
    parser.add_argument("--script", metavar="FILE",
                        help="read the user's lines from FILE ('#' lines skipped) and print the transcript")
    parser.add_argument("--config-json", metavar="JSON",
                        help="the app's config (what config.get 'config' returns), as JSON; "
                             "default {\"name\": <app folder name>}, or the worker config's")
    parser.add_argument("--transport-type", choices=("ussd", "sms"), default="ussd",
                        help="ussd has sessions (default); sms has none")
    parser.add_argument("--from", dest="from_addr", default="+27820000001", help="the user's address")
    parser.add_argument("--to", dest="to_addr", help="the app's address (default *120*123# for ussd, 12345 for sms)")
    parser.add_argument("--app-context",
                        help="trusted JS expression giving the app's extra globals (default '{require: require}', "
                             "or the worker config's)")
    parser.add_argument("--timeout", type=float,
                        help="seconds one run may take, or with --amqp to wait for a reply (default 10, or the "
                             "worker config's)")
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
    """The peer and session ``args`` describe (nothing starts yet).

    :raises ChatError: an argument, the app or its config is unusable.
    """
    to_addr = args.to_addr or ("*120*123#" if args.transport_type == "ussd" else "12345")
    # Lines that were not typed on this terminal are echoed, so the transcript shows both sides.
    echo = args.script is not None or not sys.stdin.isatty()
    options = {"transport_type": args.transport_type, "from_addr": args.from_addr, "to_addr": to_addr,
               "echo": echo}
    if args.amqp is not None:
        if args.app is not None or args.config is not None:
            raise ChatError("--amqp talks to a worker already running; it takes no APP or -c")
        if not args.transport_name:
            raise ChatError("--amqp needs --transport-name: the running worker's transport_name")
        timeout = args.timeout if args.timeout is not None else 10
        try:
            side = amqp_transport_side(args.amqp, args.transport_name, timeout, "vxsandbox chat")
        except SendError as e:
            raise ChatError(f"--amqp: {e}") from None
        return ChatSession(side, out, args.transport_name, timeout=timeout, **options)
    if args.transport_name is not None:
        raise ChatError("--transport-name goes with --amqp (a worker config has its own transport_name)")
    app = note = None
    if args.app is not None:
        app, note = find_app(args.app)
    elif args.config is None:
        raise ChatError("give the app (a .js file or its folder), -c WORKER_YAML, or --amqp URL")
    if note is not None:
        print(f"vxsandbox chat: playing {app} ({note})", file=sys.stderr)
    if args.config is not None:
        from vxsandbox_core.cli import load_config_file
        config = deployed_config(load_config_file(args.config), args.config, app, args)
    else:
        assert app is not None
        name = os.path.basename(os.path.dirname(app)) or "app"
        config_value = {"name": name} if args.config_json is None else parse_config_json(args.config_json)
        config = chat_config(app, config_value, args.app_context or "{require: require}",
                             args.timeout if args.timeout is not None else 10)
    watcher = RunWatcher()
    pm = build_plugin_manager()
    pm.register(watcher)
    broker = MemoryBroker()
    from vxsandbox_core.registry import resolve_worker
    try:
        worker = resolve_worker(config["worker"])(config, broker=broker, hooks=Hooks(pm))
    except ConfigError as e:
        raise ChatError(f"{args.config}: {e}" if args.config else str(e)) from None
    peer = EmbeddedPeer(worker, broker, watcher, config["transport_name"])
    return ChatSession(peer, out, config["transport_name"], **options)


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
        peer = session.peer
        if isinstance(peer, EmbeddedPeer):
            # The js worker's app is inline in its config; the others name their file.
            who = getattr(peer.worker.config, "javascript_file", None) or f"the {args.config} app"
        else:
            who = f"the worker of {session.transport_name} over {args.amqp}"
        session.say(f"Chatting with {who} as {session.from_addr} ({kind}; /new, /close, /quit).")

    def prompt() -> None:
        if interactive:
            out.write("you> ")
            out.flush()

    async def chat() -> int:
        try:
            await run_chat(session, lines, prompt)
        except SendError as e:
            print(f"vxsandbox chat: {e}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    return chat()
