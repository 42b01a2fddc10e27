"""Node CPU per message of the JavaScript runner, without RabbitMQ or a worker in the way.

Starts the runner exactly as the ``js-file`` worker would (its flags, the
permission model, preloading), answers
the app's requests from this process (kv in a dict, config, log, metrics,
outbound), and reads the child's CPU time from ``/proc/<pid>/task/*/schedstat``
(nanoseconds, every thread). CPU time, not wall time, so other load on the
machine moves the figures less; compare the ratios of runs made side by side
(``--repeat`` alternates the apps).

Reported per app: ``start_ms``, the CPU a child takes to start (and preload,
and be prepared) while no message waits; ``first_ms``, the CPU of the first message of a child that
was started (and, as a prefork spare is, prepared) before it came; ``warm_ms``,
the median CPU per message over ``--messages`` warm messages after a warm-up.

With ``--curve`` it reports instead how a new child's CPU per message falls
as it serves more messages (V8 compiles and optimises the code it runs
often): the mean over each stretch of its life (messages 2-11, 12-31, ...),
the cost every warm child pays before it reaches ``warm_ms``.

    python benchmarks/runner_cpu.py --repeat 5 --messages 2000
    python benchmarks/runner_cpu.py --curve --repeat 3
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VUMIGO_APP = os.path.join(ROOT, "examples", "vumigo_app", "app.js")
#: the bare app of ``roundtrip.py``: one reply, then done
BARE_APP = """
api.on_inbound_message = function (command) {
    var msg = command.msg;
    api.request('outbound.reply_to', {in_reply_to: msg.message_id, content: 'echo: ' + msg.content},
                function () { api.done(); });
};
"""
WARM_UP = 200
#: where the stretches of a child's life measured by ``--curve`` end (messages after its first)
CURVE = (10, 30, 100, 300, 1000, 2000)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended between the listing and the read
    return total


class Child:
    """One runner child and a stand-in for the worker's resources."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd, env={})
        self.kv: dict[str, Any] = {}
        self.seq = 0

    def send(self, command: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command).encode() + b"\n")
        self.popen.stdin.flush()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["cmd"]
        reply: dict[str, Any] = {"success": True}
        if name == "kv.get":
            reply["value"] = self.kv.get(request["key"])
        elif name == "kv.set":
            self.kv[request["key"]] = request["value"]
        elif name == "kv.incr":
            self.kv[request["key"]] = reply["value"] = (self.kv.get(request["key"]) or 0) + request.get("amount", 1)
        elif name == "config.get":
            reply["value"] = json.dumps({"name": "Tea Time"}) if request["key"] == "config" else None
        return {**reply, "cmd": name, "cmd_id": request["cmd_id"], "reply": True}

    def message(self) -> None:
        """One inbound message, every request answered, until the app is done."""
        self.seq += 1
        self.send({"cmd": "inbound-message", "msg": {
            "message_id": str(self.seq), "content": "1", "from_addr": f"+2783{self.seq % 50:07d}",
            "to_addr": "*120#", "session_event": "resume", "transport_name": "t", "transport_type": "ussd",
            "helper_metadata": {}, "transport_metadata": {}, "message_type": "user_message",
            "message_version": "20110921", "in_reply_to": None, "group": None, "provider": None}})
        assert self.popen.stdout is not None
        while True:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError("the runner ended during a message")
            request = json.loads(line)
            if request["cmd"] == "js.done":
                return
            if request["cmd"] == "log.error":
                raise RuntimeError(f"the app failed: {request['msg']}")
            if not request.get("acknowledged"):
                # As the worker does: an acknowledged request (the runner answered it) gets no reply.
                self.send(self.answer(request))

    def settle(self) -> None:
        """Wait until the child has been idle (no CPU used) for 200 ms: its start-up is over."""
        last, still = cpu_ns(self.popen.pid), 0
        while still < 4:
            time.sleep(0.05)
            now = cpu_ns(self.popen.pid)
            still = still + 1 if now == last else 0
            last = now

    def close(self) -> None:
        self.popen.kill()
        self.popen.wait()


async def child_argv(app: str, tmp: str, node_flags: list[str]) -> tuple[list[str], Any, dict[str, Any]]:
    """The runner's command line as the ``js-file`` worker builds it, the worker, and the initialize command."""
    from vxsandbox_core.testing import RecordingBroker, hooks_with
    from vxsandbox_js import JsFileSandbox

    path = os.path.join(tmp, f"{app}.js") if app == "bare" else VUMIGO_APP
    if app == "bare":
        with open(path, "w") as f:
            f.write(BARE_APP)
    config = {"worker": "js-file", "javascript_file": path, "sandbox_id": "bench", "isolation": "none",
              "timeout": 30}
    if app == "vumigo":
        config["app_context"] = "{require: require}"
    worker = JsFileSandbox(config, broker=RecordingBroker(), hooks=hooks_with())
    await worker.setup()
    api = worker._template_api()
    argv = [worker.executable, *worker.sandbox_args(api)]
    runner = next(i for i, a in enumerate(argv) if a.endswith("runner.js"))
    argv[runner:runner] = node_flags
    init = {"cmd": "initialize", "acknowledged": api.resources.acknowledged, **worker.app_fields(api)}
    return argv, worker, init


def begin(child: Child, init: dict[str, Any], prepare: bool) -> tuple[float, float]:
    """Start ``child`` (prepared first if ``prepare``) and run its first message: the CPU ms of each."""
    if prepare:
        child.send({**init, "cmd": "prepare"})
    child.settle()
    start = cpu_ns(child.popen.pid)
    child.send(init)
    child.message()
    return start / 1e6, (cpu_ns(child.popen.pid) - start) / 1e6


def per_message(child: Child, messages: int) -> float:
    """CPU ms per message of ``child`` over its next ``messages`` messages."""
    before = cpu_ns(child.popen.pid)
    for _ in range(messages):
        child.message()
    return (cpu_ns(child.popen.pid) - before) / messages / 1e6


def measure(argv: list[str], init: dict[str, Any], messages: int, prepare: bool) -> dict[str, float]:
    child = Child(argv, ROOT)
    try:
        start, first = begin(child, init, prepare)
        per_message(child, WARM_UP)
        return {"start_ms": start, "first_ms": first, "warm_ms": per_message(child, messages)}
    finally:
        child.close()


def curve(argv: list[str], init: dict[str, Any]) -> dict[str, float]:
    """CPU ms per message of a prepared child over each stretch of its life, by the stretch's last message."""
    child = Child(argv, ROOT)
    out: dict[str, float] = {}
    try:
        begin(child, init, True)
        served = 0
        for end in CURVE:
            out[f"{served + 2}-{end + 1}"] = per_message(child, end - served)
            served = end
    finally:
        child.close()
    return out


async def main(reactor: Any, args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # as an app's folder is: the worker checks its children could read it
        children = {app: await child_argv(app, tmp, args.node_flag) for app in args.apps}
        try:
            for i in range(args.repeat):
                for app in args.apps:
                    argv, _worker, init = children[app]
                    if args.curve:
                        row = curve(argv, init)
                        shown = ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                    else:
                        row = measure(argv, init, args.messages, not args.no_prepare)
                        shown = (f"start {row['start_ms']:.1f} ms, first {row['first_ms']:.1f} ms, "
                                 f"warm {row['warm_ms']:.3f} ms")
                    results.setdefault(app, []).append(row)
                    print(f"run {i + 1} {app}: {shown}", file=sys.stderr)
        finally:
            for _argv, worker, _init in children.values():
                await worker.teardown()
    summary = {app: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
               for app, rows in results.items()}
    head: dict[str, Any] = {"node": children[args.apps[0]][0][0]}
    if args.curve:
        head["curve_ms_per_message"] = summary
    else:
        head.update({"prepared": not args.no_prepare, "median": summary})
    print(json.dumps({**head, "runs": results}, indent=2))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", nargs="+", default=["bare", "vumigo"], choices=["bare", "vumigo"])
    parser.add_argument("--messages", type=int, default=2000, help="warm messages measured per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per app, alternating")
    parser.add_argument("--node-flag", action="append", default=[],
                        help="an extra node flag for the children (repeat for more), e.g. --node-flag=--trace-gc")
    parser.add_argument("--no-prepare", action="store_true", help="do not prepare the child before its first message")
    parser.add_argument("--curve", action="store_true",
                        help="CPU per message over stretches of a new child's life (its first 2,000 messages)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))


if __name__ == "__main__":
    cli()
