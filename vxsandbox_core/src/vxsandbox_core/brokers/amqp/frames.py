"""The frames of every message's path, encoded and decoded with ``struct`` instead of txamqp's codec.

txamqp encodes and decodes each field through a generic codec over a
``BytesIO``, about forty Python calls a frame: on a warm worker the frames of
one message (``basic.deliver`` and its content, ``basic.publish`` and its
content, the ``basic.ack`` that settles the delivery and the one that confirms
the publish) cost as much as the rest of the message's handling. These
functions do the same for exactly those frames and produce txamqp's own
objects, byte for byte and value for value as txamqp would (tests compare
both). Anything else, or anything they are not sure of (a ``headers`` table, a
malformed or truncated frame, a string longer than a short string holds), is
``None``: the caller then goes through txamqp as before, which keeps its
behaviour on every input these do not handle. (A string's length is its
UTF-8 length, as in txamqp once :mod:`.spec` has fixed it.)
"""

from __future__ import annotations

import struct
from typing import Any

from txamqp.connection import Body, Frame, Header, Method

METHOD = 1
HEADER = 2
BODY = 3
FRAME_END = 0xCE
BASIC = 60
DELIVER = 60
PUBLISH = 40
ACK = 80
NACK = 120
#: a frame's type, channel and payload size; then the payload and FRAME_END
_FRAME_HEAD = struct.Struct("!BHI")
_CLASS_METHOD = struct.Struct("!HH")
_LONGLONG = struct.Struct("!Q")
_CONTENT_HEAD = struct.Struct("!HHQH")
_CONTENT_SIZE = struct.Struct("!HHQ")
#: the property flag of the basic class's ``headers`` table (left to txamqp), the unused bit and the
#: continuation bit (more flags follow: not in 0-9-1's basic class)
_HEADERS_FLAG = 1 << 13
_UNUSED_FLAGS = 0b11
_END = bytes([FRAME_END])


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + _END


def _shortstr(text: str | bytes) -> bytes | None:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return bytes([len(data)]) + data if len(data) <= 255 else None


class Frames:
    """Encoders and decoders for the basic class's message frames, for one parsed spec."""

    def __init__(self, spec: Any) -> None:
        basic = spec.classes.byname["basic"]
        self.basic = basic
        self.deliver = basic.methods.byname["deliver"]
        self.ack = basic.methods.byname["ack"]
        self.nack = basic.methods.byname["nack"]
        #: the basic class's properties in flag order: (flag bit, name, type)
        self.property_fields = [(1 << (15 - i), f.name, f.type) for i, f in enumerate(basic.fields)]
        self.simple = {name for _, name, kind in self.property_fields if kind in ("shortstr", "octet", "timestamp")}

    # --- encoding -------------------------------------------------------------------

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes, properties: bytes,
                frame_max: int) -> bytes | None:
        """``basic.publish`` (not mandatory, not immediate) with its header and body frames, as txamqp writes it;
        ``properties`` is what :meth:`properties` made of the message's properties."""
        exchange_field = _shortstr(exchange)
        key_field = _shortstr(routing_key)
        if exchange_field is None or key_field is None:
            return None
        method = _CLASS_METHOD.pack(BASIC, PUBLISH) + b"\x00\x00" + exchange_field + key_field + b"\x00"
        header = _CONTENT_SIZE.pack(BASIC, 0, len(body)) + properties
        parts = [_frame(METHOD, channel, method), _frame(HEADER, channel, header)]
        chunk = frame_max - 8
        for start in range(0, len(body), chunk):
            parts.append(_frame(BODY, channel, body[start:start + chunk]))
        return b"".join(parts)

    def properties(self, properties: dict[str, Any]) -> bytes | None:
        """A content header's property flags and properties (the same for every message that has them)."""
        flags = 0
        fields = []
        given = {name: value for name, value in properties.items() if value is not None}
        if not given.keys() <= self.simple:
            return None
        for flag, name, kind in self.property_fields:
            value = given.get(name)
            if value is None:
                continue
            flags |= flag
            if kind == "shortstr":
                field = _shortstr(value)
                if field is None:
                    return None
                fields.append(field)
            elif not isinstance(value, int) or isinstance(value, bool):
                return None
            elif kind == "octet" and 0 <= value <= 0xFF:
                fields.append(bytes([value]))
            elif kind == "timestamp" and 0 <= value <= 0xFFFFFFFFFFFFFFFF:
                fields.append(_LONGLONG.pack(value))
            else:
                return None
        return struct.pack("!H", flags) + b"".join(fields)

    @staticmethod
    def settle(channel: int, delivery_tag: int, multiple: bool) -> bytes:
        """``basic.ack`` of ``delivery_tag`` (and every tag before it, if ``multiple``)."""
        payload = _CLASS_METHOD.pack(BASIC, ACK) + _LONGLONG.pack(delivery_tag) + (b"\x01" if multiple else b"\x00")
        return _frame(METHOD, channel, payload)

    # --- decoding -------------------------------------------------------------------

    def decode(self, data: bytes) -> Frame | None:
        """A whole frame (head, payload, end) as txamqp decodes it, or None for anything else."""
        if len(data) < 8 or data[-1] != FRAME_END:
            return None
        kind, channel, size = _FRAME_HEAD.unpack_from(data)
        if size != len(data) - 8:
            return None
        payload = data[7:-1]
        try:
            if kind == BODY:
                return Frame(channel, Body(payload))
            if kind == METHOD:
                method = self._method(payload)
                return Frame(channel, method) if method is not None else None
            if kind == HEADER:
                header = self._header(payload)
                return Frame(channel, header) if header is not None else None
        except (struct.error, IndexError):
            return None
        return None

    def _method(self, payload: bytes) -> Method | None:
        klass, method = _CLASS_METHOD.unpack_from(payload)
        if klass != BASIC:
            return None
        if method == DELIVER:
            consumer_tag, pos = _read_shortstr(payload, 4)
            (delivery_tag,) = _LONGLONG.unpack_from(payload, pos)
            bits = payload[pos + 8]
            exchange, pos = _read_shortstr(payload, pos + 9)
            routing_key, pos = _read_shortstr(payload, pos)
            args: tuple[Any, ...] = (consumer_tag, delivery_tag, bits & 1 != 0, exchange, routing_key)
            spec_method = self.deliver
        elif method in (ACK, NACK):
            (delivery_tag,) = _LONGLONG.unpack_from(payload, 4)
            bits = payload[12]
            pos = 13
            if method == ACK:
                args, spec_method = (delivery_tag, bits & 1 != 0), self.ack
            else:
                args, spec_method = (delivery_tag, bits & 1 != 0, bits & 2 != 0), self.nack
        else:
            return None
        return Method(spec_method, *args) if pos == len(payload) else None

    def _header(self, payload: bytes) -> Header | None:
        klass, weight, size, flags = _CONTENT_HEAD.unpack_from(payload)
        if klass != BASIC or weight != 0 or flags & (_HEADERS_FLAG | _UNUSED_FLAGS):
            return None
        properties: dict[str, Any] = {}
        pos = _CONTENT_HEAD.size
        for flag, name, kind in self.property_fields:
            if not flags & flag:
                continue
            if kind == "shortstr":
                properties[name], pos = _read_shortstr(payload, pos)
            elif kind == "octet":
                properties[name] = payload[pos]
                pos += 1
            else:
                (properties[name],) = _LONGLONG.unpack_from(payload, pos)
                pos += 8
        return Header(self.basic, weight, size, **properties) if pos == len(payload) else None


def _read_shortstr(data: bytes, pos: int) -> tuple[str | bytes, int]:
    """A short string at ``pos`` (text when it is UTF-8, else bytes, as txamqp gives it) and where it ends."""
    end = pos + 1 + data[pos]
    if end > len(data):
        raise IndexError("short string past the end of the frame")
    raw = data[pos + 1:end]
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        return raw, end
