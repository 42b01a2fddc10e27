"""Infrastructure faults under a real worker: broker connection dropped, Redis restarted, node gone, kills.

The shared RabbitMQ and Redis are never stopped: the broker test closes only
the worker's own connection, the Redis test runs its own redis-server.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from typing import Any

import pytest
import yaml
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from vxsandbox_core import hookimpl
from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.admin import queue_length

from ..core.test_amqp_integration import WorkerProcess, close_connection, connection_on_port
from ..resources_kv.helpers import RedisServer
from .harness import ATTACKER, FaultBench, abuse_config, node_path, sleep, vumi_message, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.node]


class Pids:
    """Keeps the pid of every child by sandbox_id."""

    def __init__(self) -> None:
        self.pids: dict[str, list[int]] = {}

    @hookimpl
    def child_started(self, api: Any, pid: int | None) -> None:
        if pid is not None:
            self.pids.setdefault(api.sandbox_id, []).append(pid)


class InfrastructureTests(FaultBench, TestCase):
    """The worker survives its surroundings failing, and loses no message."""

    timeout = 120

    async def test_broker_connection_closed_mid_stream(self) -> None:
        """RabbitMQ closing the worker's connection mid-stream: every message is still answered."""
        await self.open_bench()
        service = await self.start_worker()
        broker = service.broker
        assert isinstance(broker, AmqpBroker) and broker.connection is not None
        connection = await connection_on_port(broker.connection.client.transport.getHost().port)
        # 200 half-second runs, 20 at a time (the prefetch): the stream lasts at least 5 s.
        messages = [vumi_message(self.tn, "slow") for _ in range(200)]
        await self.publish(*messages)
        await wait_until(lambda: len(self.replies) >= 20, 30, "20 replies")
        await close_connection(connection)
        self.assertLess(len(self.replies), len(messages), "the stream was over before the connection closed")
        await wait_until(lambda: broker.connections_made >= 2, 30, "a new connection")
        await self.wait_replies(messages, timeout=90)
        await wait_until(lambda: not service.in_flight, 30, "runs to finish")
        self.assertEqual(await queue_length(self.transport, f"{self.tn}.inbound"), 0)
        self.assertEqual(await self.dead_letters(), 0)
        self.assert_no_tracebacks()

    async def test_redis_restarted_mid_stream(self) -> None:
        """Redis dying mid-stream: the app gets failed kv replies with a reason and answers; then it recovers."""
        server = RedisServer()
        self.addCleanup(server.kill)
        await server.start()
        await self.open_bench()
        kv = {"cls": "kv", "redis_manager": {"url": f"redis://127.0.0.1:{server.port}/0", "connect_timeout": 1,
                                             "command_timeout": 1, "reconnect_max_delay": 0.5}}
        config = abuse_config(self.tn)
        await self.start_worker(sandbox={**config["sandbox"], "kv": kv})
        before = [vumi_message(self.tn, "kv") for _ in range(5)]
        await self.publish(*before)
        await self.wait_replies(before)
        await server.kill()
        during = [vumi_message(self.tn, "kv") for _ in range(5)]
        await self.publish(*during)
        await self.wait_replies(during)
        await server.start()
        await sleep(1.5)
        after = [vumi_message(self.tn, "kv") for _ in range(5)]
        await self.publish(*after)
        await self.wait_replies(after)
        self.assertTrue(all(r["content"].startswith("kv failed: kv backend unavailable")
                            for r in self.replies_to(during)), self.replies_to(during))
        self.assertTrue(all(r["content"].startswith("visits ") for r in self.replies_to(after)))
        await self.wait_settled(15)
        self.assertEqual(dict(self.service.counts), {"ok": 15})
        self.assert_no_tracebacks()

    async def node_goes_away(self, break_it: Any) -> None:
        """Run on a node wrapper script, break it, and check messages are kept (dead-lettered) meanwhile."""
        wrapper = os.path.abspath(self.mktemp())
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {node_path()} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        await self.open_bench()
        await self.start_worker(executable=wrapper)
        await self.still_serves(2)
        break_it(wrapper)
        stranded = [vumi_message(self.tn, "ok") for _ in range(3)]
        await self.publish(*stranded)
        await self.wait_settled(5)
        await self.assert_dead_letters(3)
        lines = [r.getMessage() for r in self.records.records if r.levelno >= 30]
        self.assertTrue(any(wrapper in line for line in lines), lines)
        self.assert_no_tracebacks()

    async def test_node_binary_missing(self) -> None:
        """node vanishing under a running worker: messages are dead-lettered with the reason, not acked as done."""
        await self.node_goes_away(os.unlink)

    async def test_node_binary_not_executable(self) -> None:
        """node losing its execute bit: the same, the reason names the program."""
        await self.node_goes_away(lambda path: os.chmod(path, stat.S_IRUSR | stat.S_IWUSR))

    async def test_sandbox_killed_from_outside(self) -> None:
        """A child SIGKILLed by someone else: the run fails at once, its owner is told, the worker serves on."""
        pids = Pids()
        self.plugins = (pids,)
        await self.open_bench()
        await self.start_worker(timeout=30)
        attack = vumi_message(self.tn, "loop", sandbox_id=ATTACKER)
        await self.publish(attack)
        await wait_until(lambda: ATTACKER in pids.pids, 10, "the child to start")
        await sleep(0.3)
        os.kill(pids.pids[ATTACKER][0], signal.SIGKILL)
        await self.wait_settled(1, timeout=10)
        self.assertEqual(dict(self.service.counts), {"error": 1})
        await self.still_serves()
        self.assertIn("signal 9", " ".join(self.assert_operator_quiet()))
        self.assertIn("signal 9", " ".join(self.owner_lines()))

    async def test_worker_sigterm_under_load(self) -> None:
        """SIGTERM to `vxsandbox run` under load: it exits 0; a second worker answers the rest; none lost."""
        await self.open_bench()
        path = os.path.abspath(self.mktemp() + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(abuse_config(self.tn), f)
        proc = WorkerProcess()
        env = dict(os.environ)
        env.pop("VXSANDBOX_AMQP_URL", None)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        reactor.spawnProcess(proc, sys.executable,  # type: ignore[attr-defined]
                             [sys.executable, "-m", "vxsandbox_core.cli", "run", "-c", path], env=env, path=root)
        self.addCleanup(lambda: None if proc.ended.called else proc.transport.signalProcess("KILL"))
        await proc.wait_for_log("running;")
        messages = [vumi_message(self.tn, "ok") for _ in range(120)]
        await self.publish(*messages)
        await wait_until(lambda: len(self.replies) >= 10, 30, "10 replies")
        proc.transport.signalProcess("TERM")
        self.assertEqual(await proc.ended, 0, proc.log)
        answered_by_first = len(self.replies_to(messages))
        self.assertNotIn("Traceback", proc.log)
        await self.start_worker()
        await self.wait_replies(messages, timeout=90)
        self.assertGreater(answered_by_first, 0)
        self.assertEqual(await queue_length(self.transport, f"{self.tn}.inbound"), 0)
        self.assertEqual(await self.dead_letters(), 0)
