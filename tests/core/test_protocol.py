"""Tests for the JSON-line command codec."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxsandbox_core.errors import ProtocolError
from vxsandbox_core.protocol import decode, encode, load_object, make_command, make_error_reply, make_reply, nesting

from .bodies import json_values


def test_make_command_generates_distinct_ids():
    """A command built without an id gets a fresh one each time and reply false."""
    a, b = make_command("log.info", msg="x"), make_command("log.info", msg="x")
    assert a["cmd_id"] != b["cmd_id"]
    assert a["reply"] is False and a["msg"] == "x" and a["cmd"] == "log.info"


def test_reply_carries_request_cmd_and_id():
    """A reply repeats the request's cmd and cmd_id and says reply true."""
    req = make_command("kv.get", cmd_id="7", key="a")
    assert make_reply(req, value=1) == {"cmd": "kv.get", "cmd_id": "7", "reply": True, "success": True, "value": 1}
    err = make_error_reply(req, "nope")
    assert err["success"] is False and err["reason"] == "nope"


def test_encode_is_one_utf8_line():
    """Encoding writes UTF-8 text (not escapes) ending in exactly one newline."""
    line = encode({"cmd": "x", "content": "héllo\nworld"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "héllo".encode() in line
    assert json.loads(line) == {"cmd": "x", "content": "héllo\nworld"}


def test_decode_fills_missing_id_and_reply():
    """A request without cmd_id or reply gets a generated id and reply false."""
    cmd = decode(b'{"cmd": "log.info", "msg": "hi"}')
    assert cmd["reply"] is False and isinstance(cmd["cmd_id"], str) and cmd["cmd_id"]


@pytest.mark.parametrize("line, reason", [
    (b"not json", "not JSON"),
    (b"[1,2]", "not an object"),
    (b"{}", "no 'cmd'"),
    (b'{"cmd": 5}', "no 'cmd'"),
    (b'{"cmd": "x", "reply": "yes"}', "non-boolean 'reply'"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_decode_rejects_garbage_with_reason(line, reason):
    """Every kind of garbage line raises ProtocolError saying what is wrong."""
    with pytest.raises(ProtocolError, match=reason):
        decode(line)


def test_decode_stringifies_numeric_cmd_id():
    """A numeric cmd_id is turned into a string so replies match it."""
    assert decode(b'{"cmd": "x", "cmd_id": 3}')["cmd_id"] == "3"


def test_encode_escapes_a_lone_surrogate_exactly():
    """A reply echoing a cmd_id with a lone surrogate is written with \\u escapes and reads back exactly."""
    line = encode({"cmd": "kv.get", "cmd_id": "id-\ud800", "reply": True, "value": "é"})
    assert line.isascii() and line.endswith(b"\n")
    assert json.loads(line) == {"cmd": "kv.get", "cmd_id": "id-\ud800", "reply": True, "value": "é"}


def test_decode_replaces_lone_surrogates_except_in_cmd_id():
    """Half characters from a child become U+FFFD everywhere but cmd_id; the fields changed are listed."""
    repaired: list[str] = []
    line = json.dumps({"cmd": "kv.set", "cmd_id": "\udc00", "key": "k\ud800", "value": ["ok \ud83d\ude00", "\udfff"],
                       "nested": {"\ud801": 1}}).encode()
    cmd = decode(line, repaired)
    assert cmd["cmd_id"] == "\udc00"
    assert cmd["key"] == "k\ufffd"
    assert cmd["value"] == ["ok 😀", "\ufffd"]
    assert cmd["nested"] == {"\ufffd": 1}
    assert sorted(repaired) == ["key", "nested.\ufffd", "value.1"]


def test_decode_of_an_escaped_pair_repairs_nothing():
    """A surrogate pair written as escapes is one character: nothing is reported."""
    repaired: list[str] = []
    assert decode(b'{"cmd": "log.info", "msg": "\\ud83d\\ude00"}', repaired)["msg"] == "😀"
    assert repaired == []


def test_load_object_max_depth():
    """With max_depth, deeper nesting is refused with the limit in the reason; the limit itself is accepted."""
    assert nesting(load_object("{" + '"a":{' * 9 + "}" * 9 + "}", "body", ValueError, 10)) == 10
    with pytest.raises(ValueError, match="nested more than 10 levels"):
        load_object('{"a":[' * 6 + "]}" * 6, "body", ValueError, 10)
    assert nesting({"a": [[], {"b": "[[[[["}]}) == 3


FIELDS = st.sampled_from(["cmd", "cmd_id", "reply", "acknowledged", "msg", "key"]) | st.text(max_size=6)


@settings(max_examples=500, deadline=None)
@given(line=st.one_of(
    st.binary(max_size=200),
    st.dictionaries(FIELDS, json_values, max_size=6).map(lambda d: json.dumps(d).encode("utf-8")),
    st.dictionaries(FIELDS, json_values, max_size=6).map(
        lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass"))))
def test_decode_of_any_child_line_is_a_command_or_a_protocol_error(line: bytes) -> None:
    """Whatever a child writes, decode gives a command with a `cmd` string, a `cmd_id` string and a boolean
    `reply` (and text the worker can encode again), or raises ProtocolError: nothing else escapes."""
    try:
        command = decode(line)
    except ProtocolError:
        return
    assert isinstance(command["cmd"], str) and command["cmd"]
    assert isinstance(command["cmd_id"], str)
    assert isinstance(command["reply"], bool)
    encode(make_reply(command))
