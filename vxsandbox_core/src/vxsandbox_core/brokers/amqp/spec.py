"""The AMQP 0-9-1 spec txamqp needs, and the fixes txamqp 0.8 needs to talk to RabbitMQ.

Importing this module patches txamqp (once, for the process): header tables
understand every 0-9-1 field type, and body frames stay bytes. :class:`Client`
is txamqp's client without three per-frame costs.
"""

from __future__ import annotations

import time
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from txamqp import codec as _txamqp_codec
from txamqp.connection import Body, Frame
from txamqp.protocol import AMQClient
from txamqp.spec import Spec, load


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


def _decode_body(spec: Any, dec: Any) -> Body:
    return Body(dec.decode_longbytes())


# txamqp 0.8 turns each body frame into text when it happens to be valid UTF-8, then counts
# characters against the byte size in the header: a non-ASCII body never completes and
# stalls every channel of the connection. Body frames are bytes.
Body.decode = staticmethod(_decode_body)


class Client(AMQClient):  # type: ignore[misc]
    """txamqp's client without three costs it pays on every frame (each about as dear as the frame).

    It looks the frame's channel up under a lock in two generator coroutines,
    cancels and schedules a timer for each frame received, and stops and
    starts a looping call for each frame sent. Behaviour is unchanged: an
    existing channel is used directly only when the lock is free (so frames
    keep their order), the receive deadline is pushed back with
    ``DelayedCall.reset`` (free when it moves later), and the heartbeat is
    sent every interval whatever else was sent, which RabbitMQ accepts.
    """

    def process_frame(self, frame: Any) -> Deferred[None]:
        channel = self.channels.get(frame.channel)
        if channel is None or self.channelLock.locked:
            return super().process_frame(frame)  # type: ignore[no-any-return]
        try:
            if frame.payload.type == Frame.HEARTBEAT:
                self.last_heartbeat_received = time.time()
            else:
                channel.dispatch(frame, self.work)
            if self.heartbeatInterval > 0 and not self.closed:
                self.reschedule_check_heartbeat()
        except Exception:
            return fail()
        return succeed(None)

    def reschedule_check_heartbeat(self) -> None:
        if self.checkHB.active():
            self.checkHB.reset(self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)
        else:
            super().reschedule_check_heartbeat()

    def reschedule_send_heartbeat(self) -> None:
        if self.heartbeatInterval > 0 and not self.sendHB.running:
            self.sendHB.start(self.heartbeatInterval, now=False)
