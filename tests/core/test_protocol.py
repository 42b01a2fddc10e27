"""Tests for the JSON-line command codec."""

import json

import pytest

from vxsandbox_core.errors import ProtocolError
from vxsandbox_core.protocol import decode, encode, make_command, make_error_reply, make_reply


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
