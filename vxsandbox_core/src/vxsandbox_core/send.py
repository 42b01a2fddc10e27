"""``vxsandbox send``: play a transport against a running worker, publishing messages and printing the replies.

In the spirit of Vumi's message-injection script: each message goes to
``<transport>.inbound`` on the exchange ``vumi``, exactly as a transport
would publish it, and what the worker publishes on ``<transport>.outbound``
in reply to it (``in_reply_to`` its ``message_id``) is printed. Messages are
sent one at a time, each after the previous one's reply (or its timeout), so
a file of messages plays a USSD session in order.

Messages on ``<transport>.outbound`` that answer none of ours are left for
their transport: they are never acknowledged and go back to the queue when
``send`` disconnects. Still, ``send`` takes the transport's place on that
queue while it runs, so point it at a transport name no live transport
consumes.

:class:`TransportSide` does the work; ``vxsandbox chat --amqp`` uses it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from twisted.internet.defer import Deferred, TimeoutError

from .aio import default_reactor
from .brokers import Broker, Delivery
from .errors import MessageError
from .message import Message, TransportUserMessage

EXIT_OK, EXIT_NO_REPLY, EXIT_USAGE = 0, 1, 2
DEFAULT_FROM = "+27820000001"
#: the app's address when none is given, by transport type
DEFAULT_TO = {"ussd": "*120*123#"}
DEFAULT_TO_OTHER = "12345"
#: unacknowledged deliveries RabbitMQ hands ``send``; foreign ones stay unacknowledged until it leaves
PREFETCH = 1000


class SendError(Exception):
    """Nothing was sent: a bad argument or message, or the broker could not be reached."""


@dataclass
class Exchange:
    """What came back for one message: the replies, or why there were none."""

    message: TransportUserMessage
    replies: list[Message] = field(default_factory=list)
    #: why nothing came back (None when a reply came, or none was waited for)
    no_reply: str | None = None
    #: anything else worth telling the user about this exchange (a failed run that still replied)
    notes: list[str] = field(default_factory=list)


class TransportSide:
    """The transport's end of a worker's queues: publishes inbound messages, collects replies on outbound.

    :param broker: a broker (normally RabbitMQ's); :meth:`start` connects it, :meth:`stop` closes it.
    :param transport_name: the worker's ``transport_name``.
    :param connect_timeout: seconds :meth:`start` waits for the broker.
    :param where: the broker's address as errors show it.
    """

    def __init__(self, broker: Broker, transport_name: str, connect_timeout: float = 10,
                 where: str = "the broker") -> None:
        self.broker = broker
        self.transport_name = transport_name
        self.connect_timeout = connect_timeout
        self.where = where
        self.inbound = f"{transport_name}.inbound"
        self.outbound = f"{transport_name}.outbound"
        self._replies: dict[str, list[Message]] = {}
        self._waiting: dict[str, Deferred[None]] = {}

    async def start(self) -> None:
        """Connect, declare the inbound queue as the worker does, and start reading outbound.

        :raises SendError: the broker did not answer within ``connect_timeout`` seconds.
        """
        from twisted.internet.defer import ensureDeferred
        # The broker retries for ever (right for a worker); a person at a terminal wants to know.
        connected = ensureDeferred(self.broker.connect())
        connected.addTimeout(self.connect_timeout, default_reactor())
        try:
            await connected
        except TimeoutError:
            await self.broker.close()
            raise SendError(f"cannot reach the broker at {self.where} within {self.connect_timeout:g}s "
                            "(is RabbitMQ running?)") from None
        declare = getattr(self.broker, "declare", None)
        if declare is not None:
            # Declared the way the consuming worker declares it (with its dead-letter queue), so a
            # message published before the worker starts waits for it instead of being dropped.
            await declare(self.inbound, consumed=True)
        await self.broker.consume(self.outbound, self._on_outbound)

    async def stop(self) -> None:
        """Disconnect; outbound messages that answer none of ours go back to their queue."""
        await self.broker.close()

    async def _on_outbound(self, delivery: Delivery) -> None:
        try:
            reply = Message.from_json(delivery.body)
        except Exception:
            return
        replied_to = reply.get("in_reply_to")
        if replied_to not in self._replies:
            return
        await delivery.ack()
        self._replies[replied_to].append(reply)
        waiter = self._waiting.pop(replied_to, None)
        if waiter is not None:
            waiter.callback(None)

    async def exchange(self, message: TransportUserMessage, timeout: float, wait: bool = True) -> Exchange:
        """Publish ``message`` to inbound and wait up to ``timeout`` seconds for its first reply.

        :param wait: False publishes without waiting (a hang-up expects no answer).
        """
        message_id = message["message_id"]
        self._replies[message_id] = []
        waiter: Deferred[None] = Deferred()
        self._waiting[message_id] = waiter
        await self.broker.publish(self.inbound, message.to_json().encode("utf-8"))
        result = Exchange(message)
        if not wait:
            self._waiting.pop(message_id, None)
            return result
        waiter.addTimeout(timeout, default_reactor())
        try:
            await waiter
        except TimeoutError:
            self._waiting.pop(message_id, None)
            result.no_reply = (f"nothing on {self.outbound} in reply within {timeout:g}s "
                               f"(is a worker consuming {self.inbound}?)")
        result.replies = list(self._replies[message_id])
        return result


def amqp_transport_side(url: str, transport_name: str, timeout: float, who: str) -> TransportSide:
    """A :class:`TransportSide` on RabbitMQ at ``url`` (nothing connects yet); ``who`` names the connection.

    :raises SendError: the URL is not an AMQP URL.
    """
    from .brokers.amqp.broker import AmqpBroker
    from .brokers.amqp.url import AmqpUrl
    from .errors import ConfigError
    try:
        where = AmqpUrl.parse(url).safe()
    except ConfigError as e:
        raise SendError(str(e)) from None
    broker = AmqpBroker(url, prefetch_count=PREFETCH, connection_name=f"{who} {transport_name}")
    return TransportSide(broker, transport_name, timeout, where)


def build_message(fields: dict[str, Any], defaults: dict[str, Any], where: str) -> TransportUserMessage:
    """A user message of ``defaults`` overridden by ``fields``.

    :raises SendError: the fields do not make a Vumi user message (``where`` says which).
    """
    try:
        return TransportUserMessage({**defaults, **fields})
    except MessageError as e:
        raise SendError(f"{where}: {e}") from None


def read_messages(path: str, defaults: dict[str, Any]) -> list[TransportUserMessage]:
    """The messages of a JSON-lines file (``-`` for stdin): one object of message fields per line.

    :raises SendError: the file cannot be read, or a line is not an object or not a message.
    """
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SendError(f"cannot read --file {path!r}: {getattr(e, 'strerror', None) or e}") from None
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            fields = json.loads(line)
        except ValueError as e:
            raise SendError(f"{where}: not JSON ({e})") from None
        if not isinstance(fields, dict):
            raise SendError(f"{where}: expected a JSON object of message fields, got {line.strip()[:60]}")
        messages.append(build_message(fields, defaults, where))
    if not messages:
        raise SendError(f"--file {path!r} holds no messages")
    return messages


def describe(message: Message) -> str:
    """One line for a message: its content, or its session event when it has none."""
    content = message.get("content")
    if content is None:
        return f"[{message.get('session_event') or 'no content'}]"
    return str(content).replace("\n", "\n     ")


def print_exchange(exchange: Exchange, out: TextIO, as_json: bool) -> None:
    """Print what was sent and what came back, as text (``you>`` / ``app>``) or the replies as JSON lines."""
    if as_json:
        for reply in exchange.replies:
            out.write(reply.to_json() + "\n")
    else:
        out.write(f"you> {describe(exchange.message)}\n")
        for reply in exchange.replies:
            closed = " [session closed]" if reply.get("session_event") == "close" else ""
            out.write(f"app> {describe(reply)}{closed}\n")
        if exchange.no_reply is not None:
            out.write(f"[no reply: {exchange.no_reply}]\n")
    out.flush()


async def send_all(side: TransportSide, messages: Iterable[TransportUserMessage], timeout: float,
                   out: TextIO, as_json: bool = False) -> int:
    """Send ``messages`` in order, each after the previous one's reply; returns the exit status.

    A hang-up (``session_event`` close) expects no reply and is not waited for.
    """
    unanswered = 0
    for message in messages:
        exchange = await side.exchange(message, timeout, wait=message["session_event"] != "close")
        print_exchange(exchange, out, as_json)
        unanswered += exchange.no_reply is not None
    return EXIT_NO_REPLY if unanswered else EXIT_OK


DESCRIPTION = ("Publish one message (CONTENT and the options) or a JSON-lines file of messages to "
               "<transport>.inbound, as a transport would, and print what the worker publishes on "
               "<transport>.outbound in reply. Exit status: 0 every message got a reply, 1 some got none "
               "within --timeout, 2 nothing was sent (a bad argument, or no broker).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add send's own arguments to ``parser``."""
    parser.add_argument("content", nargs="?", help="the message's text (default: none, as a USSD dial-in has)")
    parser.add_argument("-c", "--config", help="worker config YAML file: its transport_name and amqp.url")
    parser.add_argument("--transport-name", help="the worker's transport_name (default: the config's)")
    parser.add_argument("--amqp-url", help="broker URL (default: $VXSANDBOX_AMQP_URL, then the config's amqp.url, "
                                           "then amqp://guest:guest@127.0.0.1:5672/%%2F)")
    parser.add_argument("--file", metavar="FILE",
                        help="JSON-lines file ('-' for stdin) of messages to send in order, one object of message "
                             "fields per line over the options' defaults")
    parser.add_argument("--from", dest="from_addr", default=DEFAULT_FROM, help="the user's address")
    parser.add_argument("--to", dest="to_addr", help="the app's address (default *120*123# for ussd, else 12345)")
    parser.add_argument("--transport-type", default="ussd", help="ussd (default), sms, ...")
    parser.add_argument("--session-event", choices=("new", "resume", "close"),
                        help="USSD session event (default none); close expects no reply")
    parser.add_argument("--timeout", type=float, default=10,
                        help="seconds to wait for each reply and for the broker (default 10)")
    parser.add_argument("--json", action="store_true", help="print the replies as Vumi JSON, one per line")
    # The exchange is the output; the broker's connection narrative only when asked for.
    parser.set_defaults(log_level="warning")


def run_command(args: argparse.Namespace) -> Any:
    """``vxsandbox send``: check the arguments (2 when bad), then send on the reactor."""
    from .cli import CliError, amqp_url, load_config_file
    raw = load_config_file(args.config) if args.config else {}
    transport = args.transport_name or raw.get("transport_name")
    if not isinstance(transport, str) or not transport:
        raise CliError("give --transport-name (or -c with a worker config that has transport_name)")
    defaults: dict[str, Any] = {
        "transport_name": transport, "transport_type": args.transport_type, "from_addr": args.from_addr,
        "to_addr": args.to_addr or DEFAULT_TO.get(args.transport_type, DEFAULT_TO_OTHER),
        "session_event": args.session_event, "content": args.content,
    }
    try:
        if args.file is not None:
            if args.content is not None:
                raise SendError("give CONTENT or --file, not both")
            messages = read_messages(args.file, defaults)
        else:
            messages = [build_message({}, defaults, "the message")]
        side = amqp_transport_side(amqp_url(raw.get("amqp"), args.amqp_url), transport, args.timeout,
                                   "vxsandbox send")
    except SendError as e:
        raise CliError(str(e)) from None

    async def send() -> int:
        try:
            await side.start()
        except SendError as e:
            raise CliError(str(e)) from None
        try:
            return await send_all(side, messages, args.timeout, sys.stdout, args.json)
        finally:
            await side.stop()
    return send()
