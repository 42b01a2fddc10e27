"""The AMQP 0-9-1 spec txamqp needs, and the fixes txamqp 0.8 needs to talk to RabbitMQ.

Importing this module patches txamqp (once, for the process): header tables
understand every 0-9-1 field type, body frames stay bytes, and a string's
length is written in bytes. :class:`Client` is txamqp's client without its
per-frame costs, reading and writing the message's frames with :mod:`.frames`.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from txamqp import codec as _txamqp_codec
from txamqp.connection import Body, Frame, Header, Method
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQClient
from txamqp.spec import Spec, load

from .frames import Frames

log = logging.getLogger("vxsandbox.broker.amqp")


@lru_cache(maxsize=1)
def frames() -> Frames:
    """The fast encoders and decoders of the message frames, for :func:`load_spec`'s spec."""
    return Frames(load_spec())


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """The AMQP 0-9-1 spec (RabbitMQ's extended XML, shipped as package data), parsed once."""
    ref = resources.files("vxsandbox_core") / "data" / "amqp0-9-1.xml"
    with resources.as_file(ref) as path:
        return load(str(path))


def _decode_field(c: Any) -> Any:
    kind = c.read(1)
    simple = {b"b": "!b", b"B": "!B", b"s": "!h", b"u": "!H", b"I": "!i", b"i": "!I",
              b"l": "!q", b"L": "!Q", b"f": "!f", b"d": "!d", b"T": "!Q"}
    if kind in simple:
        return c.unpack(simple[kind])
    if kind == b"t":
        return c.unpack("!B") != 0
    if kind == b"S":
        data = c.dec_bytes("!L")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    if kind == b"x":
        return c.dec_bytes("!L")
    if kind == b"F":
        return _decode_table(c)
    if kind == b"A":
        size = c.unpack("!L")
        end = c.nread + size
        items = []
        while c.nread < end:
            items.append(_decode_field(c))
        return items
    if kind == b"D":
        scale = c.unpack("!B")
        return Decimal(c.unpack("!i")).scaleb(-scale)
    if kind == b"V":
        return None
    raise ValueError(f"unknown AMQP field type {kind!r}")


def _decode_table(c: Any) -> dict[str, Any]:
    size = c.unpack("!L")
    end = c.nread + size
    table: dict[str, Any] = {}
    while c.nread < end:
        name = c.decode_shortstr()
        table[name] = _decode_field(c)
    return table


# txamqp 0.8 reads only four of the field types (S, I, F, t); RabbitMQ's own x-death header
# (arrays, timestamps) or a publisher's headers would otherwise make it drop the connection.
_txamqp_codec.Codec.decode_table = _decode_table


def _encode_string(c: Any, fmt: str, text: str | bytes) -> None:
    data = text.encode("utf-8") if isinstance(text, str) else text
    c.pack(fmt, len(data))
    c.write(data)


# txamqp 0.8 writes a string's length in characters before its UTF-8 bytes: a non-ASCII queue name or
# routing key made a corrupt frame, and the broker dropped the connection.
_txamqp_codec.Codec.enc_str = _encode_string


def _decode_body(spec: Any, dec: Any) -> Body:
    return Body(dec.decode_longbytes())


# txamqp 0.8 turns each body frame into text when it happens to be valid UTF-8, then counts
# characters against the byte size in the header: a non-ASCII body never completes and
# stalls every channel of the connection. Body frames are bytes.
Body.decode = staticmethod(_decode_body)


class _Content:
    """A delivery read the fast way: its method, then its header, then its body's parts."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.header: Header | None = None
        self.parts: list[bytes] = []
        self.received = 0


class Client(AMQClient):  # type: ignore[misc]
    """txamqp's client without the costs it pays on every frame (each about as dear as the frame).

    It looks the frame's channel up under a lock in two generator coroutines,
    cancels and schedules a timer for each frame received, and stops and
    starts a looping call for each frame sent. Behaviour is unchanged: an
    existing channel is used directly only when the lock is free (so frames
    keep their order), the receive deadline is pushed back with
    ``DelayedCall.reset`` (free when it moves later), and the heartbeat is
    sent every interval whatever else was sent, which RabbitMQ accepts.

    The frames of a message's path (see :mod:`.frames`) are decoded and
    encoded without txamqp's codec, and a delivery or a publisher confirm
    goes to the delegate as soon as its last frame is read, without passing
    through txamqp's queues and generator coroutines, whenever nothing of
    txamqp's is waiting to be dispatched before it (else it takes txamqp's
    way, in order). The delegate gets the same message either way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message_frames = frames()
        self._fast_methods = (self.message_frames.deliver, self.message_frames.ack, self.message_frames.nack)
        #: the delivery being read the fast way, by channel
        self._contents: dict[int, _Content] = {}

    def _unpack_frame(self, data: bytes) -> Frame:
        frame = self.message_frames.decode(data)
        return frame if frame is not None else super()._unpack_frame(data)

    def process_frame(self, frame: Any) -> Deferred[None]:
        channel = self.channels.get(frame.channel)
        # (The rest of a delivery being read the fast way follows it, whatever the lock.)
        if channel is None or (self.channelLock.locked and frame.channel not in self._contents):
            return super().process_frame(frame)  # type: ignore[no-any-return]
        try:
            if frame.payload.type == Frame.HEARTBEAT:
                self.last_heartbeat_received = time.time()
            elif not self._dispatch_now(channel, frame.payload):
                channel.dispatch(frame, self.work)
            if self.heartbeatInterval > 0 and not self.closed:
                self.reschedule_check_heartbeat()
        except Exception:
            return fail()
        return succeed(None)

    def _dispatch_now(self, channel: Any, payload: Any) -> bool:
        """Take a frame of a delivery or a confirm the fast way; False leaves it to txamqp's queues."""
        content = self._contents.get(channel.id)
        if content is not None:
            if isinstance(payload, Header) and content.header is None:
                content.header = payload
            elif isinstance(payload, Body) and content.header is not None:
                content.parts.append(payload.content)
                content.received += len(payload.content)
            else:
                # The broker interleaved another frame with a message's content: no way to read on.
                del self._contents[channel.id]
                log.error("AMQP channel %s: %s frame inside a delivery's content; dropping the connection",
                          channel.id, type(payload).__name__)
                self.transport.loseConnection()
                return True
            if content.header is not None and content.received >= content.header.size:
                del self._contents[channel.id]
                self._hand_over(channel, Message(content.method.method, content.method.args,
                                                 Content(b"".join(content.parts), [],
                                                         content.header.properties.copy())))
            return True
        if not isinstance(payload, Method) or payload.method not in self._fast_methods:
            return False
        if self.work.pending or not self.work.waiting or channel.incoming.pending or channel.incoming.waiting:
            # txamqp is still dispatching something: this frame follows it through txamqp's queues.
            return False
        if payload.method.content:
            self._contents[channel.id] = _Content(payload)
        else:
            self._hand_over(channel, Message(payload.method, payload.args))
        return True

    def _hand_over(self, channel: Any, message: Message) -> None:
        # As txamqp's dispatch does: a delegate that raises ends the connection.
        try:
            self.delegate.dispatch(channel, message)
        except Exception:
            self.close(Failure())

    def send_now(self, data: bytes) -> bool:
        """Write frames encoded by :mod:`.frames` at once; False (nothing written) while txamqp's own
        frames wait to be written, since these must not overtake them."""
        if self.outgoing.pending or self.transport is None or self.closed:
            return False
        self.reschedule_send_heartbeat()
        self.transport.write(data)
        return True

    def reschedule_check_heartbeat(self) -> None:
        if self.checkHB.active():
            self.checkHB.reset(self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)
        else:
            super().reschedule_check_heartbeat()

    def reschedule_send_heartbeat(self) -> None:
        if self.heartbeatInterval > 0 and not self.sendHB.running:
            self.sendHB.start(self.heartbeatInterval, now=False)
