"""Tests for vxsandbox_core.message: the Vumi wire format, read liberally and written exactly."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings

from vxsandbox_core.errors import MessageError
from vxsandbox_core.message import (
    MAX_NESTING,
    Message,
    TransportEvent,
    TransportUserMessage,
    format_timestamp,
    parse_timestamp,
)
from vxsandbox_core.protocol import encode, make_command
from vxsandbox_core.testing import make_user_message

from .bodies import hostile_bodies

VUMI_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")

USER_FIELDS = {"message_version", "message_type", "message_id", "to_addr", "from_addr", "in_reply_to",
               "session_event", "content", "transport_name", "transport_type", "transport_metadata",
               "helper_metadata", "routing_metadata", "group", "provider", "to_addr_type", "from_addr_type",
               "timestamp"}


def vumi2_new_session() -> dict:
    return {"message_version": "20110921", "message_type": "user_message", "message_id": "m1",
            "to_addr": "*120*8864#", "from_addr": "+27831234567", "transport_name": "aat_ussd",
            "transport_type": "ussd", "session_event": "new", "content": "*120*8864#",
            "from_addr_type": "msisdn", "transport_metadata": {"aat_ussd": {"provider": "x"}},
            "timestamp": "2024-03-01T10:11:12Z"}


class TestTimestamps:
    def test_written_in_vumi_format_utc(self) -> None:
        """An aware datetime is written in UTC as '%Y-%m-%d %H:%M:%S.%f'."""
        value = datetime(2024, 3, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
        assert format_timestamp(value) == "2024-03-01 10:00:00.000005"

    @pytest.mark.parametrize("text", ["2024-03-01 10:00:00.000000", "2024-03-01 10:00:00",
                                      "2024-03-01 10:00:00Z", "2024-03-01T10:00:00Z",
                                      "2024-03-01T12:00:00+02:00", "2024-03-01 10:00:00.000000Z"])
    def test_liberal_input(self, text: str) -> None:
        """Microseconds optional, trailing Z, ISO T and UTC offsets are all read as the same instant."""
        assert parse_timestamp(text) == datetime(2024, 3, 1, 10, 0, 0)

    @pytest.mark.parametrize("text", ["yesterday", "2024-13-01 10:00:00", "", "10:00:00"])
    def test_garbage_rejected(self, text: str) -> None:
        """Text that is no timestamp is a MessageError naming the field."""
        with pytest.raises(MessageError, match="timestamp"):
            parse_timestamp(text)

    def test_new_message_timestamp_is_vumi_format(self) -> None:
        """A message built without a timestamp gets the current UTC time in Vumi's format."""
        msg = make_user_message()
        assert VUMI_TS.match(msg.to_dict()["timestamp"])
        assert abs(msg["timestamp"] - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(seconds=5)


class TestUserMessage:
    def test_every_wire_field_present(self) -> None:
        """A new user message carries every field of the Vumi wire format."""
        data = make_user_message().to_dict()
        assert USER_FIELDS <= set(data)
        assert data["message_version"] == "20110921"
        assert data["message_type"] == "user_message"

    def test_vumi2_new_session_is_accepted_and_kept(self) -> None:
        """A vumi2 new-session message (dialled code as content, ISO timestamp) is read with its fields."""
        msg = Message.from_json(json.dumps(vumi2_new_session()))
        assert isinstance(msg, TransportUserMessage)
        assert msg["content"] == "*120*8864#"
        assert msg["session_event"] == "new"
        assert msg["from_addr_type"] == "msisdn"
        assert msg.to_dict()["timestamp"] == "2024-03-01 10:11:12.000000"

    def test_unknown_fields_kept(self) -> None:
        """Fields the model does not know survive a round trip."""
        data = vumi2_new_session()
        data["sandbox_id"] = "tea"
        data["x_custom"] = {"a": [1, 2]}
        out = json.loads(Message.from_json(json.dumps(data)).to_json())
        assert out["sandbox_id"] == "tea"
        assert out["x_custom"] == {"a": [1, 2]}

    def test_null_metadata_become_objects(self) -> None:
        """Null or missing metadata are written as objects, never null."""
        data = vumi2_new_session()
        data["transport_metadata"] = None
        data["routing_metadata"] = None
        out = Message.from_json(json.dumps(data)).to_dict()
        assert out["transport_metadata"] == {}
        assert out["helper_metadata"] == {}
        assert out["routing_metadata"] == {}

    @pytest.mark.parametrize("field, value, needle", [
        ("session_event", "open", "session_event"),
        ("message_version", "2", "message_version"),
        ("transport_metadata", [1], "transport_metadata"),
        ("timestamp", 12, "timestamp"),
        ("to_addr", 5, "to_addr"),
    ])
    def test_invalid_fields(self, field: str, value: object, needle: str) -> None:
        """An invalid field is a MessageError naming it."""
        data = vumi2_new_session()
        data[field] = value
        with pytest.raises(MessageError, match=needle):
            Message.from_json(json.dumps(data))

    def test_missing_required_field(self) -> None:
        """A user message without transport_type is refused, naming the field."""
        data = vumi2_new_session()
        del data["transport_type"]
        with pytest.raises(MessageError, match="transport_type"):
            Message.from_json(json.dumps(data))

    @pytest.mark.parametrize("body, needle", [
        (b"\xff\xfe", "UTF-8"), (b"not json", "not JSON"), (b"[1]", "not an object"),
        (b'{"message_type": "nope"}', "message_type"), (b"[" * 100000, "JSON"),
    ])
    def test_bad_bodies(self, body: bytes, needle: str) -> None:
        """Bodies that are no Vumi message raise MessageError with the reason."""
        with pytest.raises(MessageError, match=needle):
            Message.from_json(body)

    def test_non_ascii_round_trip(self) -> None:
        """Non-ASCII content survives JSON encoding as UTF-8."""
        msg = make_user_message(content="Sawubona ñ 日本 😀")
        body = msg.to_json().encode("utf-8")
        assert Message.from_json(body)["content"] == "Sawubona ñ 日本 😀"


class TestReply:
    def test_reply_swaps_and_keeps(self) -> None:
        """A reply swaps addresses, points at the message and keeps transport fields and endpoint."""
        msg = make_user_message(transport_metadata={"session": "s"}, helper_metadata={"h": 1},
                                routing_metadata={"endpoint_name": "ussd", "hops": [1]},
                                from_addr_type="msisdn", provider="mtn")
        reply = msg.reply("hi")
        assert (reply["to_addr"], reply["from_addr"]) == (msg["from_addr"], msg["to_addr"])
        assert reply["in_reply_to"] == msg["message_id"]
        assert reply["message_id"] != msg["message_id"]
        assert reply["transport_name"] == msg["transport_name"]
        assert reply["transport_type"] == msg["transport_type"]
        assert reply["transport_metadata"] == {"session": "s"}
        assert reply["helper_metadata"] == {"h": 1}
        assert reply["routing_metadata"] == {"endpoint_name": "ussd"}
        assert reply["to_addr_type"] == "msisdn"
        assert reply["provider"] == "mtn"
        assert reply["session_event"] is None
        assert reply.get_routing_endpoint() == "ussd"

    def test_reply_metadata_objects_when_inbound_had_none(self) -> None:
        """A reply to a message whose metadata were null still carries objects."""
        data = vumi2_new_session()
        data.update(transport_metadata=None, helper_metadata=None)
        reply = Message.from_json(json.dumps(data)).reply("x").to_dict()  # type: ignore[attr-defined]
        for name in ("transport_metadata", "helper_metadata", "routing_metadata"):
            assert reply[name] == {}
        assert VUMI_TS.match(reply["timestamp"])

    def test_reply_closing_session(self) -> None:
        """continue_session=False closes the session."""
        assert make_user_message().reply("bye", continue_session=False)["session_event"] == "close"

    def test_reply_cannot_override_addressing(self) -> None:
        """to_addr, from_addr and in_reply_to of a reply come from the message answered."""
        with pytest.raises(MessageError):
            make_user_message().reply("x", to_addr="+1")

    def test_reply_group(self) -> None:
        """reply_group clears to_addr for a group message and keeps it otherwise."""
        assert make_user_message(group="#chat").reply_group("x")["to_addr"] is None
        assert make_user_message().reply_group("x")["to_addr"] == "+27831234567"

    def test_send_through_endpoint(self) -> None:
        """send builds a new message routed through the endpoint, with transport fields set."""
        msg = TransportUserMessage.send("+27830000000", "hello", transport_name="sms_out",
                                        transport_type="sms", endpoint="sms")
        data = msg.to_dict()
        assert data["to_addr"] == "+27830000000"
        assert data["from_addr"] is None
        assert data["in_reply_to"] is None
        assert data["routing_metadata"] == {"endpoint_name": "sms"}
        assert data["transport_name"] == "sms_out"


class TestEvent:
    def test_vumi2_ack_without_transport_name(self) -> None:
        """A vumi2 ack without transport_name is a valid event."""
        body = {"message_version": "20110921", "message_type": "event", "event_id": "e1",
                "event_type": "ack", "user_message_id": "m1", "sent_message_id": "ext-1",
                "timestamp": "2024-03-01 10:00:00.123456", "helper_metadata": {},
                "routing_metadata": {}}
        event = Message.from_json(json.dumps(body))
        assert isinstance(event, TransportEvent)
        assert "transport_name" not in event
        assert event["sent_message_id"] == "ext-1"

    @pytest.mark.parametrize("event_type, extra", [
        ("ack", {"sent_message_id": "x"}), ("nack", {"nack_reason": "no credit"}),
        ("delivery_report", {"delivery_status": "delivered"}),
    ])
    def test_event_types(self, event_type: str, extra: dict) -> None:
        """ack, nack and delivery_report carry their own fields through a round trip."""
        event = TransportEvent(event_type=event_type, user_message_id="m1", **extra)
        again = Message.from_json(event.to_json())
        assert again == event

    def test_unknown_event_type_and_status(self) -> None:
        """An unknown event_type or delivery_status is refused."""
        with pytest.raises(MessageError, match="event_type"):
            TransportEvent(event_type="read", user_message_id="m1")
        with pytest.raises(MessageError, match="delivery_status"):
            TransportEvent(event_type="delivery_report", user_message_id="m1", delivery_status="lost")

    def test_event_requires_user_message_id(self) -> None:
        """user_message_id is required, as Vumi requires it."""
        with pytest.raises(MessageError, match="user_message_id"):
            TransportEvent(event_type="ack", sent_message_id="x")


class TestHostileBodies:
    @pytest.mark.parametrize("body, needle", [
        (b'{"message_type": []}', "message_type"), (b'{"message_type": {}}', "message_type"),
        (b"{}", "message_type"), (b'{"message_type": "user_message"}', "to_addr|message_id|transport"),
    ])
    def test_bodies_that_raised_type_error(self, body: bytes, needle: str) -> None:
        """Unhashable or missing message types are a MessageError naming the field, not a TypeError."""
        with pytest.raises(MessageError, match=needle):
            Message.from_json(body)

    @pytest.mark.parametrize("timestamp", ["0001-01-01 00:00:00+14:00", "9999-12-31 23:59:59-14:00"])
    def test_timestamps_beyond_datetime(self, timestamp: str) -> None:
        """A timestamp whose UTC time falls outside years 1 to 9999 is a MessageError, not an OverflowError."""
        with pytest.raises(MessageError, match="timestamp.*outside the years"):
            Message.from_json(json.dumps(dict(vumi2_new_session(), timestamp=timestamp)))

    def test_lone_surrogates_become_replacement_characters(self, caplog: pytest.LogCaptureFixture) -> None:
        """Half characters in values and keys become U+FFFD (logged once, naming the fields); pairs stay whole."""
        data = dict(vumi2_new_session(), content="split \ud83d", transport_metadata={"\udc00k": ["\udbff"]},
                    helper_metadata={"emoji": "\ud83d\ude00"})
        body = json.dumps(data).encode()
        with caplog.at_level("WARNING", "vxsandbox.message"):
            msg = Message.from_json(body)
        assert msg["content"] == "split \ufffd"
        assert msg["transport_metadata"] == {"\ufffdk": ["\ufffd"]}
        assert msg["helper_metadata"] == {"emoji": "😀"}
        assert msg.to_json().encode("utf-8")
        [record] = caplog.records
        assert "'content'" in record.getMessage() and "transport_metadata" in record.getMessage()
        assert "U+FFFD" in record.getMessage()

    def test_nesting_limit(self) -> None:
        """A body nested deeper than MAX_NESTING is refused naming the nesting; MAX_NESTING itself is read."""
        def body(depth: int) -> str:
            # The message object itself is the first level.
            inner = '{"a":' * (depth - 1) + "1" + "}" * (depth - 1)
            return json.dumps(dict(vumi2_new_session(), transport_metadata="X")).replace('"X"', inner)
        assert Message.from_json(body(MAX_NESTING))["transport_metadata"]
        with pytest.raises(MessageError, match=f"nested more than {MAX_NESTING} levels"):
            Message.from_json(body(MAX_NESTING + 1))
        # Whether json.loads gives up first depends on the caller's stack; either way the reason says so.
        with pytest.raises(MessageError, match="nested"):
            Message.from_json(body(960))

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(hostile_bodies("tr"))
    def test_any_body_is_a_message_or_a_message_error(self, body: bytes) -> None:
        """Whatever the body, from_json returns a message the child can be sent, or raises MessageError."""
        try:
            msg = Message.from_json(body)
        except MessageError as e:
            assert str(e)
            return
        command = make_command("inbound-message", msg=msg.to_dict())
        assert json.loads(encode(command).decode("utf-8")) == json.loads(json.dumps(command, default=str))
