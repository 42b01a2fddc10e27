"""What a ``config.get`` per message costs a warm JavaScript child, with and without kept replies.

vumigo_v02 apps ask the ``config`` resource for ``config`` on every message, and
for ``translation.<lang>`` (often tens of KiB) once a user has picked a language.
The config resource's replies never change while the worker runs, so it lists
``get`` in ``FIXED``: a warm child keeps the first reply per key and answers
later requests itself. This script runs one warm child of the ``js`` worker in
this process (no broker; isolation as configured by default), its app asking
for ``config`` and a translation of ``--kib`` KiB before it replies, once with
the config resource as shipped and once with ``FIXED`` emptied, alternating,
and prints messages/s, the worker's CPU per message (this process) and the
child's (``/proc/<pid>/task/*/schedstat``).

    python benchmarks/fixed_replies.py --messages 2000 --kib 50 --repeat 3
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from typing import Any

from twisted.internet import defer, task

from vxsandbox_core.builtins.config import ConfigResource
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message
from vxsandbox_js import JsSandbox

APP = """
api.on_inbound_message = function (command) {
    var self = this;
    self.request('config.get', {key: 'config'}, function (config) {
        self.request('config.get', {key: 'translation.fr'}, function (translation) {
            self.request('outbound.reply_to', {content: JSON.parse(config.value).name + ' ' +
                                               translation.value.length}, function () { self.done(); });
        });
    });
};
"""


class UnfixedConfigResource(ConfigResource):
    """The config resource as it was before 1.3: every ``get`` is a request to the worker."""

    FIXED: dict[str, str] = {}


def node_cpu_ms() -> float:
    """CPU of every runner process now alive (ms), from schedstat of all their threads."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/task/*/schedstat"):
        pid = stat.split("/")[2]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"runner.js" not in f.read():
                    continue
            with open(stat) as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total / 1e6


async def measure(cls: str, messages: int, kib: int, in_flight: int) -> dict[str, float]:
    translation = json.dumps({"strings": "x" * (kib * 1024)})
    config = {"worker": "js", "javascript": APP, "sandbox_id": "bench", "transport_name": "bench",
              "messages_per_process": messages + 100, "timeout": 30,
              "sandbox": {"config": {"cls": cls, "values": {"config": {"name": "Tea Time"},
                                                             "translation.fr": translation}},
                          "outbound": {"cls": "vxsandbox_core.testing:StubOutboundResource"}}}
    worker = JsSandbox(config, broker=RecordingBroker(), hooks=hooks_with())
    await worker.setup()
    try:
        async def one() -> None:
            outcome = await worker.process_message(make_user_message(content="hi", sandbox_id="bench"))
            assert outcome == "ok", outcome

        await one()  # the child starts and keeps its replies
        before_worker, before_node, start = time.process_time(), node_cpu_ms(), time.perf_counter()
        left = messages

        async def lane() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        await defer.gatherResults([defer.ensureDeferred(lane()) for _ in range(in_flight)])
        elapsed = time.perf_counter() - start
        return {"msg_per_s": messages / elapsed,
                "worker_ms": (time.process_time() - before_worker) * 1000 / messages,
                "child_ms": (node_cpu_ms() - before_node) / messages}
    finally:
        await worker.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=50, help="KiB of the translation value (default 50)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=1, help="messages in flight at once (default 1)")
    args = parser.parse_args()
    variants = {"kept (FIXED)": "config", "every time": "__main__:UnfixedConfigResource"}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}

    async def run(reactor: Any) -> None:
        for _ in range(args.repeat):
            for name, cls in variants.items():
                results[name].append(await measure(cls, args.messages, args.kib, args.in_flight))
        print(f"{args.messages} warm messages, two config.get each (one of {args.kib} KiB), "
              f"{args.in_flight} in flight; medians of {args.repeat}")
        for name, runs in results.items():
            figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"  {name:>13}: {figures['msg_per_s']:7.0f} msg/s, worker {figures['worker_ms']:.3f} ms/msg, "
                  f"child {figures['child_ms']:.3f} ms/msg")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
