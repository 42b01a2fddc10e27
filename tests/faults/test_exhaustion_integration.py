"""One tenant trying to exhaust a real worker (RabbitMQ, Redis, node): memory, logs, metrics, descriptors.

Each test publishes an attack (tenant ``attacker``) among well-behaved
messages (tenant ``good``) and checks that the good ones are answered, the
attack is bounded by the limit named in ``vxsandbox_core/README.md``'s
attack table, and the app's owner and the operator are told why.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from .harness import ATTACKER, FaultBench, HostileHttpServer, vumi_message

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.node]


class ExhaustionTests(FaultBench, TestCase):
    """Attacks on the worker's shared resources; the other tenant keeps being served."""

    timeout = 120

    async def attack(self, content: str, copies: int = 1, good: int = 3, **config: Any) -> list[dict[str, Any]]:
        """Publish ``copies`` of the attack and ``good`` well-behaved messages; wait until all are settled."""
        await self.open_bench()
        await self.start_worker(**config)
        metadata = {"url": self.http.url} if hasattr(self, "http") else {}
        attacks = [vumi_message(self.tn, content, sandbox_id=ATTACKER, transport_metadata=metadata)
                   for _ in range(copies)]
        messages = [vumi_message(self.tn, "ok") for _ in range(good)]
        await self.publish(*attacks, *messages)
        await self.wait_replies(messages)
        await self.wait_settled(good + copies)
        self.assertEqual(await self.dead_letters(), 0)
        return attacks

    def start_http(self) -> HostileHttpServer:
        self.http = HostileHttpServer()
        self.addCleanup(self.http.stop)
        return self.http

    async def test_child_that_never_reads_its_replies(self) -> None:
        """Hundreds of 60 KB kv replies to a child that stops reading end at stdin_limit, not in worker memory."""
        await self.attack("deaf", timeout=20)
        self.assertEqual(dict(self.service.counts), {"ok": 3, "error": 1})
        self.assertIn("not reading its replies", " ".join(self.owner_lines()))
        self.assertIn("killed: stdin_limit", " ".join(self.assert_operator_quiet()))

    async def test_stderr_flood_is_capped(self) -> None:
        """400 000 stderr lines give the owner 1000 lines and one count; the operator one line; the app is answered."""
        attack, = await self.attack("stderr-flood")
        self.assertEqual([r["content"] for r in self.replies_to([attack])], ["stderr sent"])
        owner = self.owner_lines()
        self.assertEqual(len(owner), 1001)
        # The runner's own "Done." line (api.done) comes after the flood and is dropped too.
        self.assertEqual(owner[-1], "399001 more log lines dropped in this run (max_log_lines_per_run is 1000)")
        self.assert_operator_quiet(max_lines=1)

    async def test_log_resource_flood_is_capped(self) -> None:
        """3000 log requests all succeed, 1000 are kept, and one line counts the rest."""
        attack, = await self.attack("log-flood", max_pending_requests=5000)
        self.assertEqual([r["content"] for r in self.replies_to([attack])], ["logged"])
        owner = self.owner_lines()
        self.assertEqual(len(owner), 1001)
        self.assertEqual(owner[-1], "2001 more log lines dropped in this run (max_log_lines_per_run is 1000)")

    async def test_floods_do_not_starve_a_good_tenant(self) -> None:
        """Four stderr floods at once leave a good tenant's reply time within a second."""
        await self.open_bench()
        await self.start_worker()
        floods = [vumi_message(self.tn, "stderr-flood", sandbox_id=ATTACKER) for _ in range(4)]
        await self.publish(*floods)
        good = [vumi_message(self.tn, "ok")]
        started = time.monotonic()
        await self.publish(*good)
        await self.wait_replies(good)
        took = time.monotonic() - started
        await self.wait_settled(5)
        operator = [r for r in self.records.records if f"[{ATTACKER}]" in r.getMessage()]
        self.assertLessEqual(len(operator), 4, [r.getMessage() for r in operator])
        self.assertLess(took, 1.0)

    async def test_ever_new_metric_names(self) -> None:
        """Five runs of 500 new metric names each: 100 accepted in all, and /metrics stays small."""
        attacks = await self.attack("metric-flood", copies=5, max_pending_requests=1000)
        accepted = sorted(r["content"] for r in self.replies_to(attacks))
        self.assertEqual(sum(int(c.rsplit(" ", 1)[1]) for c in accepted), 100)
        metrics = self.service.worker.resources.resources["metrics"]
        self.assertEqual(len(metrics.aggregates()), 100)

    async def test_header_flood(self) -> None:
        """Endless 8 KB header lines fail the request at max_header_bytes; the server sees the connection dropped."""
        self.start_http()
        attack, = await self.attack("header-flood")
        self.assertEqual([json.loads(r["content"]) for r in self.replies_to([attack])], [{"max_header_bytes": 1}])
        self.assertLess(self.http.header_bytes_sent, 4 * 1024 * 1024)

    async def test_held_requests_are_budgeted(self) -> None:
        """100 requests a server never answers: 20 held (then timed out), 80 refused naming the budget."""
        self.start_http()
        attack, = await self.attack("http-hold", timeout=10)
        failures = json.loads(self.replies_to([attack])[0]["content"])
        self.assertEqual(failures.pop("max_concurrent_requests_per_tenant"), 80)
        self.assertEqual(list(failures.values()), [20])
        self.assertIn("timed out", list(failures)[0])
        self.assertFalse([r for r in self.records.records if r.levelno >= logging.ERROR and "EMFILE" in r.getMessage()])
