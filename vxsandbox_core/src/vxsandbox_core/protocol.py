"""The sandbox JSON-line protocol: one JSON object per line on the child's stdin and stdout.

Every command is an object with ``cmd`` (a string; ``resource.command`` for
requests from the child), ``cmd_id`` (a string, generated when absent) and
``reply`` (a boolean), plus the command's own fields. Replies carry the
request's ``cmd`` and ``cmd_id``, ``reply: true``, ``success`` and, on failure,
``reason``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .errors import ProtocolError

Command = dict[str, Any]


def new_cmd_id() -> str:
    """Return a fresh command id, unique across runs and processes."""
    return uuid.uuid4().hex


def make_command(cmd: str, cmd_id: str | None = None, **fields: Any) -> Command:
    """Build a request command with ``reply`` false and a generated id when none is given."""
    command: Command = dict(fields)
    command["cmd"] = cmd
    command["cmd_id"] = cmd_id if cmd_id is not None else new_cmd_id()
    command["reply"] = False
    return command


def make_reply(request: Command, success: bool = True, **fields: Any) -> Command:
    """Build the reply to ``request``: same ``cmd`` and ``cmd_id``, ``reply`` true."""
    reply: Command = dict(fields)
    reply["cmd"] = request.get("cmd")
    reply["cmd_id"] = request.get("cmd_id")
    reply["reply"] = True
    reply["success"] = success
    return reply


def make_error_reply(request: Command, reason: str) -> Command:
    """Build a failed reply to ``request`` that says why in ``reason``."""
    return make_reply(request, success=False, reason=reason)


def encode(command: Command) -> bytes:
    """Serialise one command as a UTF-8 JSON line ending in a newline.

    Non-ASCII text is written as UTF-8, not ``\\u`` escapes, so a child reading
    its stdin as UTF-8 text sees the characters themselves.
    """
    return json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def load_object(raw: bytes | str, what: str, error: type[Exception]) -> dict[str, Any]:
    """Parse UTF-8 JSON text that must be an object; ``error(reason)`` says what is wrong.

    ``what`` names the input in the reason ("line", "body"). Deep nesting is
    a reason like any other, never a RecursionError in the worker.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{what} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise error(f"{what} is JSON nested too deeply") from None
    except ValueError as e:
        raise error(f"{what} is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise error(f"{what} is JSON but not an object (got {type(value).__name__})")
    return value


def decode(line: bytes | str) -> Command:
    """Parse one line from a child into a command, validating its shape.

    :raises ProtocolError: the line is not UTF-8, not JSON, not an object, or
        its ``cmd``, ``cmd_id`` or ``reply`` field has the wrong type.
    """
    value = load_object(line, "line", ProtocolError)
    cmd = value.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError("command has no 'cmd' string")
    cmd_id = value.get("cmd_id")
    if cmd_id is None:
        value["cmd_id"] = new_cmd_id()
    elif not isinstance(cmd_id, str):
        # Vumi's JS toolkit always sends strings; a number is a mistake, not an attack.
        value["cmd_id"] = str(cmd_id)
    reply = value.setdefault("reply", False)
    if not isinstance(reply, bool):
        raise ProtocolError(f"command {cmd!r} has a non-boolean 'reply' ({reply!r})")
    return value
