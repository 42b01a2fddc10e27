"""The message frames encoded and decoded without txamqp's codec: the same bytes and values as txamqp's,
and the client that takes deliveries and confirms the fast way only where txamqp has nothing to dispatch first."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from txamqp.client import TwistedDelegate
from txamqp.connection import Body, Frame, Header, Method
from txamqp.protocol import AMQClient

from vxsandbox_core.brokers.amqp.frames import Frames
from vxsandbox_core.brokers.amqp.spec import Client, frames, load_spec

SPEC = load_spec()
BASIC = SPEC.classes.byname["basic"]
FRAME_MAX = 131072


def reference() -> AMQClient:
    """txamqp's own client, for its encoder and decoder."""
    return AMQClient(TwistedDelegate(), "/", SPEC)


def txamqp_bytes(frame: Frame) -> bytes:
    return reference()._pack_frame(frame)  # type: ignore[no-any-return]


def content_frames(channel: int, body: bytes, properties: dict[str, Any], frame_max: int) -> bytes:
    """A header and body frames as txamqp writes them (its AMQChannel.write_content)."""
    data = txamqp_bytes(Frame(channel, Header(BASIC, 0, len(body), **properties)))
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        data += txamqp_bytes(Frame(channel, Body(body[start:start + chunk])))
    return data


#: any text (no lone surrogates, which have no UTF-8 form) that fits a short string: 40 characters, 160 bytes at most
short_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
short_strings = st.one_of(short_text, st.binary(max_size=40))
simple_properties = st.fixed_dictionaries({}, optional={
    "content-type": short_text, "content-encoding": short_text, "delivery-mode": st.integers(0, 255),
    "priority": st.integers(0, 255), "correlation-id": short_text, "reply-to": short_text,
    "expiration": short_text, "message-id": short_text, "timestamp": st.integers(0, 2 ** 64 - 1),
    "type": short_text, "user-id": short_text, "app-id": short_text, "reserved": short_text})


def split_frames(data: bytes) -> list[bytes]:
    frames_ = []
    while data:
        size = int.from_bytes(data[3:7], "big")
        frames_.append(data[:size + 8])
        data = data[size + 8:]
    return frames_


def same_frame(ours: Frame, theirs: Frame) -> None:
    assert ours.channel == theirs.channel
    assert type(ours.payload) is type(theirs.payload)
    if isinstance(ours.payload, Method):
        assert ours.payload.method is theirs.payload.method
        assert ours.payload.args == theirs.payload.args
    elif isinstance(ours.payload, Header):
        assert (ours.payload.klass, ours.payload.weight, ours.payload.size) == \
            (theirs.payload.klass, theirs.payload.weight, theirs.payload.size)
        assert ours.payload.properties == theirs.payload.properties
    else:
        assert ours.payload.content == theirs.payload.content


# --- encoding ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(channel=st.integers(1, 65535), exchange=short_text, routing_key=short_text,
       body=st.binary(max_size=600), properties=simple_properties, frame_max=st.sampled_from([16, 100, 4096]))
def test_publish_is_txamqps_bytes(channel: int, exchange: str, routing_key: str, body: bytes,
                                  properties: dict[str, Any], frame_max: int) -> None:
    """basic.publish, its header and its body frames (split at frame_max) are byte for byte txamqp's."""
    publish = BASIC.methods.byname["publish"]
    expected = txamqp_bytes(Frame(channel, Method(publish, 0, exchange, routing_key, False, False)))
    expected += content_frames(channel, body, properties, frame_max)
    fields = frames().properties(properties)
    assert fields is not None
    assert frames().publish(channel, exchange, routing_key, body, fields, frame_max) == expected


@given(channel=st.integers(1, 65535), tag=st.integers(0, 2 ** 64 - 1), multiple=st.booleans())
def test_settle_is_txamqps_basic_ack(channel: int, tag: int, multiple: bool) -> None:
    """The basic.ack that settles a delivery is byte for byte txamqp's."""
    ack = BASIC.methods.byname["ack"]
    assert Frames.settle(channel, tag, multiple) == txamqp_bytes(Frame(channel, Method(ack, tag, multiple)))


def test_publish_leaves_what_it_cannot_write_to_txamqp() -> None:
    """A header table, a value out of its type's range or a short string over 255 bytes: None (txamqp's way)."""
    fast = frames()
    assert fast.properties({"headers": {"x": 1}}) is None
    assert fast.properties({"delivery-mode": 256}) is None
    assert fast.properties({"delivery-mode": True}) is None
    assert fast.properties({"timestamp": -1}) is None
    assert fast.properties({"reply-to": "x" * 256}) is None
    assert fast.properties({"no-such-property": "x"}) is None
    assert fast.properties({"content-type": None}) == b"\x00\x00"
    assert fast.publish(1, "vumi", "x" * 256, b"{}", b"\x00\x00", FRAME_MAX) is None


def test_non_ascii_routing_key_is_counted_in_bytes() -> None:
    """A short string's length is its UTF-8 length (unpatched txamqp counted characters and corrupted the frame)."""
    data = frames().publish(1, "vumi", "sms.ñandú.outbound", b"{}", b"\x00\x00", FRAME_MAX)
    assert data is not None
    method = reference()._unpack_frame(split_frames(data)[0])
    assert method.payload.args[2] == "sms.ñandú.outbound"


# --- decoding ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(channel=st.integers(0, 65535), consumer_tag=short_strings, tag=st.integers(0, 2 ** 64 - 1),
       redelivered=st.booleans(), exchange=short_strings, routing_key=short_strings,
       body=st.binary(max_size=300), properties=simple_properties)
def test_delivery_decodes_as_txamqp_decodes_it(channel: int, consumer_tag: Any, tag: int, redelivered: bool,
                                               exchange: Any, routing_key: Any, body: bytes,
                                               properties: dict[str, Any]) -> None:
    """basic.deliver, its header and its body frames give the same txamqp objects either way."""
    deliver = BASIC.methods.byname["deliver"]
    data = txamqp_bytes(Frame(channel, Method(deliver, consumer_tag, tag, redelivered, exchange, routing_key)))
    data += content_frames(channel, body, properties, 64)
    for raw in split_frames(data):
        ours = frames().decode(raw)
        assert ours is not None
        same_frame(ours, reference()._unpack_frame(raw))


@given(channel=st.integers(0, 65535), tag=st.integers(0, 2 ** 64 - 1), multiple=st.booleans(),
       requeue=st.booleans())
def test_confirms_decode_as_txamqp_decodes_them(channel: int, tag: int, multiple: bool, requeue: bool) -> None:
    """The broker's basic.ack and basic.nack give the same txamqp objects either way."""
    for frame in (Frame(channel, Method(BASIC.methods.byname["ack"], tag, multiple)),
                  Frame(channel, Method(BASIC.methods.byname["nack"], tag, multiple, requeue))):
        raw = txamqp_bytes(frame)
        ours = frames().decode(raw)
        assert ours is not None
        same_frame(ours, reference()._unpack_frame(raw))


def test_decode_leaves_other_frames_to_txamqp() -> None:
    """Other methods, header tables, heartbeats and frames with a wrong end or size are None."""
    fast = frames()
    assert fast.decode(txamqp_bytes(Frame(1, Method(BASIC.methods.byname["qos"], 0, 20, False)))) is None
    assert fast.decode(txamqp_bytes(Frame(1, Header(BASIC, 0, 2, headers={"x-death": "y"})))) is None
    heartbeat = bytes([8, 0, 0, 0, 0, 0, 0, 0xCE])
    assert fast.decode(heartbeat) is None
    ack = txamqp_bytes(Frame(1, Method(BASIC.methods.byname["ack"], 5, False)))
    assert fast.decode(ack[:-1] + b"\x00") is None
    assert fast.decode(ack[:3] + (14).to_bytes(4, "big") + ack[7:]) is None
    assert fast.decode(ack[:3] + (12).to_bytes(4, "big") + ack[7:-2] + b"\xce") is None
    assert fast.decode(ack[:3] + (14).to_bytes(4, "big") + ack[7:-1] + b"\x00\xce") is None


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from([1, 2, 3]), channel=st.integers(0, 65535), payload=st.binary(max_size=80),
       head=st.sampled_from([b"", b"\x00\x3c\x00\x3c", b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x78",
                             b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05"]))
def test_any_frame_decodes_as_txamqp_or_not_at_all(kind: int, channel: int, payload: bytes, head: bytes) -> None:
    """Whatever a frame holds, the fast decoder gives txamqp's result or None (then txamqp decodes it)."""
    body = head + payload
    raw = bytes([kind]) + channel.to_bytes(2, "big") + len(body).to_bytes(4, "big") + body + b"\xce"
    ours = frames().decode(raw)
    if ours is not None:
        same_frame(ours, reference()._unpack_frame(raw))


# --- the client -------------------------------------------------------------------------------


class Recorder(TwistedDelegate):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def basic_deliver(self, ch: Any, msg: Any) -> None:
        # (txamqp reads an empty body as '', the fast way as b''; the connection takes both.)
        self.seen.append(("deliver", (msg.consumer_tag, msg.delivery_tag, msg.redelivered, msg.exchange,
                                      msg.routing_key, msg.content.body or b"", msg.content.properties)))

    def basic_return_(self, ch: Any, msg: Any) -> None:
        self.seen.append(("return", (msg.reply_code, msg.content.body)))

    def basic_ack(self, ch: Any, msg: Any) -> None:
        self.seen.append(("ack", (msg.delivery_tag, msg.multiple)))


def connected(cls: type[AMQClient]) -> tuple[AMQClient, Recorder, StringTransport]:
    delegate = Recorder()
    client = cls(delegate, "/", SPEC, clock=Clock())
    transport = StringTransport()
    client.makeConnection(transport)
    client.channel(1)
    client.channel(2)
    transport.clear()
    return client, delegate, transport


def delivery(tag: int, body: bytes, channel: int = 1) -> bytes:
    deliver = BASIC.methods.byname["deliver"]
    data = txamqp_bytes(Frame(channel, Method(deliver, "ctag", tag, tag % 2 == 0, "vumi", "t.inbound")))
    return data + content_frames(channel, body, {"content-type": "application/json", "delivery-mode": 2}, 100)


def confirm(tag: int, channel: int = 2) -> bytes:
    return txamqp_bytes(Frame(channel, Method(BASIC.methods.byname["ack"], tag, True)))


@settings(max_examples=100, deadline=None)
@given(bodies=st.lists(st.binary(max_size=250), min_size=1, max_size=5), cuts=st.lists(st.integers(1, 40)))
def test_client_hands_over_what_txamqps_would(bodies: list[bytes], cuts: list[int]) -> None:
    """Deliveries and confirms, however the bytes arrive, reach the delegate as txamqp's client hands them over."""
    stream = b"".join(delivery(i + 1, body) + confirm(i + 1) for i, body in enumerate(bodies))
    results = []
    for cls in (Client, AMQClient):
        client, delegate, _ = connected(cls)
        rest = stream
        for cut in cuts:
            client.dataReceived(rest[:cut])
            rest = rest[cut:]
        client.dataReceived(rest)
        results.append(delegate.seen)
    assert results[0] == results[1]
    assert [kind for kind, _ in results[0]] == ["deliver", "ack"] * len(bodies)


def test_client_keeps_order_behind_txamqps_queue() -> None:
    """A confirm that arrives while txamqp is still dispatching an earlier frame follows it, in order."""
    client, delegate, _ = connected(Client)
    returned = split_frames(txamqp_bytes(Frame(1, Method(BASIC.methods.byname["return"], 312, "NO_ROUTE", "vumi",
                                                         "nowhere")))
                            + content_frames(1, b"back", {}, 100))
    # txamqp's worker now waits for the returned message's content: the confirm must wait too.
    client.dataReceived(returned[0] + confirm(1))
    assert delegate.seen == []
    client.dataReceived(b"".join(returned[1:]) + delivery(2, b"two"))
    assert [(kind, args[0]) for kind, args in delegate.seen] == [("return", 312), ("ack", 1), ("deliver", "ctag")]


def test_client_drops_a_connection_that_interleaves_a_delivery() -> None:
    """A method frame inside a delivery's content cannot be read on: the connection is dropped, with a log."""
    client, delegate, transport = connected(Client)
    frames_ = split_frames(delivery(1, b"body"))
    client.dataReceived(frames_[0] + confirm(1, channel=1))
    assert transport.disconnecting
    assert delegate.seen == []


def test_client_closes_the_connection_when_its_delegate_raises() -> None:
    """As txamqp's dispatch does: a delegate that raises on a delivery handed over the fast way ends the connection."""
    client, delegate, transport = connected(Client)

    def broken(ch: Any, msg: Any) -> None:
        raise RuntimeError("delegate bug")
    delegate.basic_ack = broken
    client.dataReceived(confirm(1))
    assert transport.disconnecting


def test_client_writes_frames_at_once_unless_txamqps_wait() -> None:
    """send_now writes at once when nothing of txamqp's is queued, and refuses (writes nothing) when it is."""
    client, _, transport = connected(Client)
    assert client.send_now(b"frames")
    assert transport.value() == b"frames"
    client.outgoing.pending.append(Frame(1, Body(b"queued")))
    assert not client.send_now(b"more")
    assert transport.value() == b"frames"


