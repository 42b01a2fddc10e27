"""The Vumi message model: user messages and events exactly as Vumi and vumi2 put them on the wire.

A message is a mapping of its wire fields (unknown fields are kept). Input is
read liberally (vumi2 events without ``transport_name``, timestamps with a
trailing ``Z`` or no microseconds, missing metadata); output is always in
Vumi's exact form: metadata fields are objects, timestamps are
``"%Y-%m-%d %H:%M:%S.%f"`` in UTC.

Hostile or broken bodies are refused with :class:`MessageError` naming what
is wrong, never another exception: nesting deeper than :data:`MAX_NESTING`
is refused (a body the worker could parse but not encode again for the
child once wedged it), and a lone UTF-16 surrogate (half a character, as
UCS-2 SMS gateways produce when a message is split inside an emoji) is
replaced by U+FFFD, so the app still answers and every reply, log line and
stored value is valid UTF-8.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from .errors import MessageError
from .protocol import load_object, may_hold_surrogates, replace_surrogates

log = logging.getLogger("vxsandbox.message")

VUMI_DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
MESSAGE_VERSION = "20110921"

SESSION_NONE = None
SESSION_NEW = "new"
SESSION_RESUME = "resume"
SESSION_CLOSE = "close"
SESSION_EVENTS = (SESSION_NONE, SESSION_NEW, SESSION_RESUME, SESSION_CLOSE)
EVENT_TYPES = ("ack", "nack", "delivery_report")
DELIVERY_STATUSES = ("pending", "failed", "delivered")
_METADATA = ("transport_metadata", "helper_metadata", "routing_metadata")
#: levels of objects and arrays a message body may nest (Vumi's own use no more than four)
MAX_NESTING = 64


def format_timestamp(value: datetime) -> str:
    """Write a datetime in Vumi's format, in UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if value.year >= 1000:
        # The same text as VUMI_DATE_FORMAT, at a tenth of strftime's cost (once per reply).
        return value.isoformat(" ", "microseconds")
    return value.strftime(VUMI_DATE_FORMAT)


def parse_timestamp(value: str) -> datetime:
    """Read a Vumi timestamp, returned as a naive UTC datetime.

    Besides Vumi's own format this accepts no microseconds, a ``T`` between
    date and time, a trailing ``Z`` and a UTC offset (converted to UTC).

    :raises MessageError: it is none of those.
    """
    text = value.strip()
    if len(text) == 26 and text[10] == " " and text[19] == "." and text[20:].isdigit():
        # Vumi's own format, as every transport sends it: fromisoformat is ten times faster than
        # strptime, and with this shape it accepts exactly what VUMI_DATE_FORMAT does.
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    if text.endswith("Z"):
        text = text[:-1]
    text = text.replace("T", " ", 1)
    for fmt in (VUMI_DATE_FORMAT, "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is not None and " " in text:
        try:
            return parsed.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise MessageError(f"field 'timestamp': {_short(value)} is outside the years 1 to 9999 in UTC") from None
    raise MessageError(f"field 'timestamp': {_short(value)} is not a Vumi timestamp "
                       "('YYYY-MM-DD HH:MM:SS.ffffff')")


def utcnow() -> datetime:
    """The current time as a naive UTC datetime, as Vumi stores it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Message(Mapping[str, Any]):
    """A Vumi message: a dict of wire fields with validation and JSON conversion."""

    message_type: str = ""
    #: fields that must be present on input, with the types they may have
    required: dict[str, tuple[type, ...]] = {}

    def __init__(self, payload: Mapping[str, Any] | None = None, **fields: Any) -> None:
        data = dict(payload or {})
        data.update(fields)
        data.setdefault("message_version", MESSAGE_VERSION)
        data.setdefault("message_type", self.message_type)
        timestamp = data.get("timestamp")
        if timestamp is None:
            data["timestamp"] = utcnow()
        elif isinstance(timestamp, str):
            data["timestamp"] = parse_timestamp(timestamp)
        elif not isinstance(timestamp, datetime):
            raise MessageError(f"field 'timestamp': expected a string, got {_short(timestamp)}")
        for name in _METADATA:
            if data.get(name) is None:
                data[name] = {}
        self.payload = data
        self.validate()

    def validate(self) -> None:
        """Check required fields and their types.

        :raises MessageError: naming the field.
        """
        if self.payload.get("message_version") != MESSAGE_VERSION:
            raise MessageError(f"field 'message_version': expected {MESSAGE_VERSION!r}, "
                               f"got {_short(self.payload.get('message_version'))}")
        if self.payload.get("message_type") != self.message_type:
            raise MessageError(f"field 'message_type': expected {self.message_type!r}, "
                               f"got {_short(self.payload.get('message_type'))}")
        for name, types in self.required.items():
            if name not in self.payload:
                raise MessageError(f"field {name!r} is missing")
            if not isinstance(self.payload[name], types):
                raise MessageError(f"field {name!r}: wrong type ({type(self.payload[name]).__name__})")
        for name in _METADATA:
            if not isinstance(self.payload[name], dict):
                raise MessageError(f"field {name!r}: expected an object, got {_short(self.payload[name])}")

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.payload[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self.payload)

    def __len__(self) -> int:
        return len(self.payload)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.payload == other.payload

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.payload!r}>"

    def get_routing_endpoint(self) -> str:
        """The endpoint the message travels through (``routing_metadata.endpoint_name``, else ``default``)."""
        endpoint = self.payload["routing_metadata"].get("endpoint_name")
        return endpoint if isinstance(endpoint, str) and endpoint else "default"

    def set_routing_endpoint(self, endpoint: str | None = None) -> None:
        """Route the message through ``endpoint`` (``default`` when None), as Vumi's connectors read it."""
        self.payload["routing_metadata"]["endpoint_name"] = endpoint or "default"

    def to_dict(self) -> dict[str, Any]:
        """The wire form as a JSON-ready dict (timestamp formatted)."""
        data = dict(self.payload)
        data["timestamp"] = format_timestamp(data["timestamp"])
        return data

    def to_json(self) -> str:
        """The wire form as JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), default=_json_default)

    @staticmethod
    def from_json(body: bytes | str) -> Message:
        """Parse a broker body into a user message or an event, by its ``message_type``.

        Lone surrogates are replaced by U+FFFD (logged once per body, naming the fields).

        :raises MessageError: the body is not UTF-8 JSON, not an object, nested
            deeper than :data:`MAX_NESTING`, or not a valid message.
        """
        data = load_object(body, "body", MessageError, MAX_NESTING)
        if may_hold_surrogates(body):
            repaired = replace_surrogates(data)
            if repaired:
                log.warning("message %s: lone UTF-16 surrogates (half a character) in %s replaced with U+FFFD",
                            _short(data.get("message_id", data.get("event_id"))), _fields(repaired))
        kind = data.get("message_type")
        classes = {"user_message": TransportUserMessage, "event": TransportEvent}
        cls = classes.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise MessageError(f"field 'message_type': expected 'user_message' or 'event', got {_short(kind)}")
        return cls(data)


def _short(value: Any, limit: int = 80) -> str:
    """A value's repr cut to ``limit`` characters, for reasons that quote hostile input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _fields(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(_short(p, 40) for p in sorted(paths)[:limit])
    return shown if len(paths) <= limit else f"{shown} and {len(paths) - limit} more"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_STR_OR_NONE = (str, type(None))


class TransportUserMessage(Message):
    """A user message (SMS, USSD, chat line) to or from a transport."""

    message_type = "user_message"
    required = {
        "message_id": (str,),
        "to_addr": _STR_OR_NONE,
        "from_addr": _STR_OR_NONE,
        "transport_name": (str,),
        "transport_type": (str,),
        "content": _STR_OR_NONE,
        "session_event": _STR_OR_NONE,
    }

    def __init__(self, payload: Mapping[str, Any] | None = None, **fields: Any) -> None:
        data = dict(payload or {})
        data.update(fields)
        data.setdefault("message_id", uuid.uuid4().hex)
        data.setdefault("in_reply_to", None)
        data.setdefault("session_event", None)
        data.setdefault("content", None)
        data.setdefault("group", None)
        data.setdefault("provider", None)
        data.setdefault("to_addr_type", None)
        data.setdefault("from_addr_type", None)
        super().__init__(data)

    def validate(self) -> None:
        super().validate()
        if self.payload["session_event"] not in SESSION_EVENTS:
            raise MessageError(f"field 'session_event': expected one of new, resume, close or null, "
                               f"got {_short(self.payload['session_event'])}")

    def reply(self, content: str | None, continue_session: bool = True, **fields: Any) -> TransportUserMessage:
        """Build the reply to this message: addresses swapped, transport fields and endpoint kept."""
        if "to_addr" in fields or "from_addr" in fields or "in_reply_to" in fields:
            raise MessageError("a reply's to_addr, from_addr and in_reply_to come from the message it answers")
        session_event = None if continue_session else SESSION_CLOSE
        data = {
            "to_addr": self["from_addr"],
            "from_addr": self["to_addr"],
            "group": self.get("group"),
            "in_reply_to": self["message_id"],
            "content": content,
            "session_event": session_event,
            "transport_name": self["transport_name"],
            "transport_type": self["transport_type"],
            "transport_metadata": dict(self["transport_metadata"]),
            "helper_metadata": dict(self["helper_metadata"]),
            "routing_metadata": _reply_routing(self["routing_metadata"]),
            "to_addr_type": self.get("from_addr_type"),
            "from_addr_type": self.get("to_addr_type"),
            "provider": self.get("provider"),
        }
        data.update(fields)
        return TransportUserMessage(data)

    @classmethod
    def send(cls, to_addr: str | None, content: str | None, *, transport_name: str, transport_type: str,
             endpoint: str | None = None, **fields: Any) -> TransportUserMessage:
        """Build a new message (not a reply) to ``to_addr`` through ``endpoint``.

        ``transport_name`` and ``transport_type`` are required because vumi2
        transports drop an outbound message that lacks them.
        """
        data: dict[str, Any] = {"from_addr": None}
        data.update(fields)
        data.update(to_addr=to_addr, content=content, transport_name=transport_name,
                    transport_type=transport_type)
        msg = cls(data)
        if endpoint is not None:
            msg.set_routing_endpoint(endpoint)
        return msg

    def reply_group(self, content: str | None, continue_session: bool = True,
                    **fields: Any) -> TransportUserMessage:
        """Build a reply to everyone in the message's group: no ``to_addr`` when it came from a group."""
        reply = self.reply(content, continue_session, **fields)
        if self.get("group") is not None:
            reply["to_addr"] = None
        return reply


def _reply_routing(routing: dict[str, Any]) -> dict[str, Any]:
    # Keep only the endpoint so the reply leaves through the connector it arrived on.
    return {k: v for k, v in routing.items() if k == "endpoint_name"}


class TransportEvent(Message):
    """An event about a message the worker sent: ack, nack or delivery report."""

    message_type = "event"
    required = {
        "event_id": (str,),
        "event_type": (str,),
        "user_message_id": (str,),
    }

    def __init__(self, payload: Mapping[str, Any] | None = None, **fields: Any) -> None:
        data = dict(payload or {})
        data.update(fields)
        data.setdefault("event_id", uuid.uuid4().hex)
        super().__init__(data)

    def validate(self) -> None:
        super().validate()
        event_type = self.payload["event_type"]
        if event_type not in EVENT_TYPES:
            raise MessageError(f"field 'event_type': expected ack, nack or delivery_report, got {_short(event_type)}")
        needed = {"ack": "sent_message_id", "nack": "nack_reason", "delivery_report": "delivery_status"}[event_type]
        if needed not in self.payload:
            # vumi2 and Vumi always set these; a peer that leaves one out is still understood.
            self.payload[needed] = None
        status = self.payload.get("delivery_status")
        if event_type == "delivery_report" and status is not None and status not in DELIVERY_STATUSES:
            raise MessageError(f"field 'delivery_status': expected pending, failed or delivered, got {_short(status)}")
