"""A sandbox written without any vxsandbox code: it speaks the JSON-line protocol on stdin/stdout.

For each inbound message it logs a line, replies "echo: <content>" and,
once both requests are answered, exits 0 (which ends the run as a success).
"""

import json
import sys

next_id = 0
pending = {}


def send(cmd, **fields):
    """Write one request; returns its cmd_id."""
    global next_id
    next_id += 1
    cmd_id = str(next_id)
    sys.stdout.write(json.dumps({"cmd": cmd, "cmd_id": cmd_id, "reply": False, **fields}) + "\n")
    sys.stdout.flush()
    pending[cmd_id] = cmd
    return cmd_id


for line in sys.stdin:
    command = json.loads(line)
    if command.get("reply"):
        # A reply to one of our requests: same cmd_id, plus success (and reason when it failed).
        cmd = pending.pop(command["cmd_id"])
        if not command["success"]:
            sys.stderr.write(f"{cmd} failed: {command.get('reason')}\n")
        if not pending:
            break
    elif command["cmd"] == "inbound-message":
        msg = command["msg"]
        send("log.info", msg=f"got {msg['content']!r} from {msg['from_addr']}")
        send("outbound.reply_to", in_reply_to=msg["message_id"], content=f"echo: {msg['content']}",
             continue_session=False)
    elif command["cmd"] == "inbound-event":
        break
    # Other commands from the worker (e.g. "initialize") need no answer here.
