"""The sandbox JSON-line protocol: one JSON object per line on the child's stdin and stdout.

Every command is an object with ``cmd`` (a string; ``resource.command`` for
requests from the child), ``cmd_id`` (a string, generated when absent) and
``reply`` (a boolean), plus the command's own fields. Replies carry the
request's ``cmd`` and ``cmd_id``, ``reply: true``, ``success`` and, on failure,
``reason``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from .errors import ProtocolError

Command = dict[str, Any]

#: what takes the place of a lone UTF-16 surrogate (half a character, which has no UTF-8 form)
REPLACEMENT_CHARACTER = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    its stdin as UTF-8 text sees the characters themselves. A command holding
    a lone surrogate (a ``cmd_id`` the child chose, echoed back) is written
    with ``\\u`` escapes instead: UTF-8 cannot carry it, JSON can, exactly.
    """
    text = json.dumps(command, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(command, separators=(",", ":")).encode("ascii") + b"\n"


def load_object(raw: bytes | str, what: str, error: type[Exception], max_depth: int | None = None) -> dict[str, Any]:
    """Parse UTF-8 JSON text that must be an object; ``error(reason)`` says what is wrong.

    ``what`` names the input in the reason ("line", "body"). Deep nesting is
    a reason like any other, never a RecursionError in the worker; with
    ``max_depth``, an object nested deeper than that is refused too.
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
    # Fewer brackets than max_depth cannot nest deeper: most bodies skip the walk.
    if max_depth is not None and raw.count("{") + raw.count("[") > max_depth and nesting(value) > max_depth:
        raise error(f"{what} is JSON nested more than {max_depth} levels deep")
    return value


def nesting(value: Any) -> int:
    """How many levels of objects and arrays ``value`` has (0 for a scalar), without recursing."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def may_hold_surrogates(raw: bytes | str) -> bool:
    """False when JSON text certainly decodes to no lone surrogate: a cheap test before :func:`replace_surrogates`.

    Strict UTF-8 cannot encode a surrogate, so in bytes only a ``\\uD8xx``
    to ``\\uDFxx`` escape can produce one.
    """
    if isinstance(raw, str):
        return "\\u" in raw or (not raw.isascii() and _SURROGATE.search(raw) is not None)
    return b"\\ud" in raw or b"\\uD" in raw


def replace_surrogates(value: dict[str, Any], keep: tuple[str, ...] = ()) -> list[str]:
    """Replace every lone surrogate in the strings (keys too) of a JSON object by U+FFFD, in place.

    json.loads joins an escaped surrogate pair into its character, so any
    surrogate left in its result is half a character. Top-level fields named
    in ``keep`` are left alone. Returns the paths of the fields changed
    (``content``, ``transport_metadata.session``), in no particular order.
    """
    changed: list[str] = []
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            entries = list(item.items())
            if any(_SURROGATE.search(key) for key, _ in entries):
                item.clear()
                for key, child in entries:
                    fixed = _SURROGATE.sub(REPLACEMENT_CHARACTER, key)
                    if fixed != key:
                        changed.append(path + fixed)
                    item[fixed] = child
                entries = list(item.items())
            for key, child in entries:
                if path == "" and key in keep:
                    continue
                if isinstance(child, str):
                    if _SURROGATE.search(child):
                        item[key] = _SURROGATE.sub(REPLACEMENT_CHARACTER, child)
                        changed.append(path + key)
                elif isinstance(child, (dict, list)):
                    stack.append((child, f"{path}{key}."))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                if isinstance(child, str):
                    if _SURROGATE.search(child):
                        item[index] = _SURROGATE.sub(REPLACEMENT_CHARACTER, child)
                        changed.append(f"{path}{index}")
                elif isinstance(child, (dict, list)):
                    stack.append((child, f"{path}{index}."))
    return changed


def decode(line: bytes | str, repaired: list[str] | None = None) -> Command:
    """Parse one line from a child into a command, validating its shape.

    Lone surrogates (which JavaScript strings may hold, and UTF-8 cannot) are
    replaced by U+FFFD everywhere but in ``cmd_id``, which the reply must
    repeat exactly; the paths of the fields changed are added to ``repaired``.

    :raises ProtocolError: the line is not UTF-8, not JSON, not an object, or
        its ``cmd``, ``cmd_id`` or ``reply`` field has the wrong type.
    """
    value = load_object(line, "line", ProtocolError)
    if may_hold_surrogates(line):
        changed = replace_surrogates(value, keep=("cmd_id",))
        if repaired is not None:
            repaired.extend(changed)
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
