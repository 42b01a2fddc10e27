"""Hypothesis strategies for hostile broker bodies: any JSON value, and valid Vumi messages mutated.

Shared by the fast fuzz on the in-memory broker (tests/core) and the one
through RabbitMQ (tests/faults). Strings include lone surrogates, which
``json.dumps`` writes as ``\\uD800``-style escapes, as UCS-2 gateways do.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: any text, lone surrogates included
texts = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ["\ud800", "a\udc00b", "\udbff\udbff", "😀", "", "user_message", "event", "ack", "20110921"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12)

#: timestamps as transports write them, and at the edges of what datetime can hold
timestamps = st.one_of(
    st.sampled_from(["0001-01-01 00:00:00+14:00", "9999-12-31 23:59:59-14:00", "0001-01-01 00:00:00",
                     "9999-12-31 23:59:59.999999Z", "2024-02-30 10:00:00", "2024-03-01T10:00:00+99:00",
                     "2024-03-01 10:00:00.1234567", " 2024-03-01 10:00:00 ", "2024-03-01"]),
    st.datetimes().map(lambda d: d.isoformat(" ")),
    st.builds(lambda d, h, m, z: f"{d.isoformat(' ')}{'+' if h >= 0 else '-'}{abs(h):02d}:{m:02d}{z}",
              st.datetimes(), st.integers(-23, 23), st.integers(0, 59), st.sampled_from(["", "Z"])),
    texts)


def user_message(transport: str) -> dict[str, Any]:
    """A valid user message as a Vumi transport writes it."""
    return {
        "message_version": "20110921", "message_type": "user_message", "message_id": uuid.uuid4().hex,
        "to_addr": "*120*8864#", "from_addr": "+27831234567", "in_reply_to": None, "session_event": "resume",
        "content": "ok", "transport_name": transport, "transport_type": "ussd", "transport_metadata": {},
        "helper_metadata": {}, "routing_metadata": {}, "group": None, "provider": None,
        "timestamp": "2026-11-28 10:00:00.000000",
    }


def vumi2_event() -> dict[str, Any]:
    """A valid vumi2 ack: no transport_name, timestamp with a trailing Z and no microseconds."""
    return {"message_version": "20110921", "message_type": "event", "event_id": uuid.uuid4().hex,
            "event_type": "ack", "user_message_id": "m1", "sent_message_id": "x",
            "timestamp": "2026-11-28 10:00:00Z", "helper_metadata": {}, "routing_metadata": {}}


FIELDS = sorted(set(user_message("x")) | set(vumi2_event()) | {"sandbox_id", "nack_reason", "delivery_status"})


@st.composite
def mutated_messages(draw: Any, transport: str, kind: str) -> bytes:
    """A valid message (mostly of ``kind``, else of the other kind) with fields replaced, removed or added."""
    own = draw(st.integers(0, 3)) > 0
    data = user_message(transport) if (kind == "user_message") == own else vumi2_event()
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS) | texts)
        action = draw(st.sampled_from(["value", "delete", "timestamp"]))
        if action == "delete":
            data.pop(field, None)
        elif action == "timestamp":
            data["timestamp"] = draw(timestamps)
        else:
            data[field] = draw(json_values)
    return json.dumps(data).encode()


@st.composite
def damaged_bytes(draw: Any, transport: str) -> bytes:
    """A valid body cut short, or with bytes overwritten (invalid UTF-8 included)."""
    body = json.dumps(user_message(transport)).encode()
    if draw(st.booleans()):
        return body[:draw(st.integers(0, len(body) - 1))]
    at = draw(st.integers(0, len(body) - 1))
    return body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at + 1:]


def hostile_bodies(transport: str, kind: str = "user_message") -> st.SearchStrategy[bytes]:
    """Any JSON value, mutated valid messages and damaged bytes, as bodies for the queue of ``kind``."""
    # Mutated messages twice over, so that about a third of the bodies are valid and reach the app.
    mutated = mutated_messages(transport, kind)
    return st.one_of(json_values.map(lambda v: json.dumps(v).encode()), mutated, mutated,
                     damaged_bytes(transport), st.binary(max_size=40))


def sample(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` examples of ``strategy`` drawn by Hypothesis, for a test that sends them all through a worker."""
    examples: list[Any] = []

    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        examples.append(example)

    collect()
    return examples
