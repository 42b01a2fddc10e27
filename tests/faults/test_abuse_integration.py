"""Abusive apps on a real worker (RabbitMQ, Redis, node): each attack is contained and nothing is lost.

Each test publishes one attacking message (tenant ``attacker``) among
well-behaved ones (tenant ``good``), then checks that every good message is
answered, every delivery is settled as documented (the attack acked as a
failed run, nothing dead-lettered), the app's owner got the reason in the
``log`` resource, and the operator got a line or two without a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import txredisapi
from twisted.trial.unittest import TestCase

from .harness import ATTACKER, FaultBench, vumi_message

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.node]


class AbusiveAppTests(FaultBench, TestCase):
    """One JavaScript app, many attacks; the worker keeps serving the other tenant."""

    timeout = 90

    async def attack(self, content: str, good: int = 3, **config: Any) -> dict[str, Any]:
        """Publish the attack and ``good`` well-behaved messages; wait until all are settled and answered."""
        await self.open_bench()
        await self.start_worker(**config)
        attack = vumi_message(self.tn, content, sandbox_id=ATTACKER)
        messages = [vumi_message(self.tn, "ok") for _ in range(good)]
        await self.publish(attack, *messages)
        await self.wait_replies(messages)
        await self.wait_settled(good + 1)
        self.assertEqual(await self.dead_letters(), 0)
        return attack

    def assert_failed_run(self, attack: dict[str, Any], owner_sees: str) -> None:
        """The attack's run failed and was acked; no reply for it; the owner was told ``owner_sees``."""
        self.assertEqual(dict(self.service.counts), {"ok": 3, "error": 1})
        self.assertEqual(self.replies_to([attack]), [])
        owner = "\n".join(self.owner_lines())
        self.assertIn(owner_sees, owner)

    async def test_infinite_loop(self) -> None:
        """A synchronous endless loop is killed by the timeout; the owner is told why."""
        attack = await self.attack("loop")
        self.assert_failed_run(attack, "timeout")
        self.assertIn("killed: timeout", " ".join(self.assert_operator_quiet()))

    async def test_infinite_promise_chain(self) -> None:
        """An endless promise chain (starving the event loop) is killed by the timeout too."""
        attack = await self.attack("promise-loop")
        self.assert_failed_run(attack, "timeout")
        self.assertIn("killed: timeout", " ".join(self.assert_operator_quiet()))

    async def test_memory_bomb(self) -> None:
        """A memory bomb hits the V8 heap bound and dies at once, long before the timeout."""
        attack = await self.attack("memory", timeout=20)
        self.assert_failed_run(attack, "heap out of memory")
        self.assert_operator_quiet()

    async def test_fork_attempt(self) -> None:
        """Starting a process is refused by Node's permission model; the app's error reaches its owner."""
        attack = await self.attack("fork")
        self.assert_failed_run(attack, "Access to this API has been restricted")
        self.assert_operator_quiet()

    async def test_writing_files(self) -> None:
        """Writing a file is refused by Node's permission model."""
        attack = await self.attack("write")
        self.assert_failed_run(attack, "Access to this API has been restricted")
        self.assert_operator_quiet()

    async def test_stdout_flood(self) -> None:
        """Flooding stdout ends at recv_limit with the reason, not in the worker's memory."""
        attack = await self.attack("stdout-flood")
        self.assert_failed_run(attack, "recv_limit")
        self.assertIn("killed: recv_limit", " ".join(self.assert_operator_quiet()))

    async def test_endless_line(self) -> None:
        """One endless line without a newline is not buffered forever: recv_limit ends it."""
        attack = await self.attack("endless-line")
        self.assert_failed_run(attack, "recv_limit")
        self.assert_operator_quiet()

    async def test_fifty_mib_json_line(self) -> None:
        """A 50 MiB JSON line is cut off at recv_limit instead of being parsed."""
        attack = await self.attack("big-line", timeout=20)
        self.assert_failed_run(attack, "recv_limit")
        self.assert_operator_quiet()

    async def test_request_flood(self) -> None:
        """Thousands of requests at once: pending ones are capped and the run is killed past the run cap."""
        attack = await self.attack("request-flood", max_requests_per_run=1000, max_pending_requests=50)
        self.assert_failed_run(attack, "max_requests_per_run")
        self.assertIn("killed: too many requests", " ".join(self.assert_operator_quiet()))

    async def test_requests_after_done(self) -> None:
        """Requests sent after ``js.done`` are not carried out (no late reply, no late write) and are reported."""
        attack = await self.attack("after-done")
        self.assertEqual(self.replies_to([attack]), [])
        redis = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
        self.addCleanup(redis.disconnect)
        late = await redis.keys(f"vxfault:{self.tn}:*after-done*")
        self.assertEqual(late, [])
        owner = " ".join(self.owner_lines()).lower()
        self.assertIn("after", owner)
        self.assertIn("done", owner)

    async def test_replies_for_commands_never_sent(self) -> None:
        """A thousand replies to cmd_ids the worker never sent: ignored, reported once, app still answered."""
        attack = await self.attack("bogus-replies")
        self.assertEqual([r["content"] for r in self.replies_to([attack])], ["bogus sent"])
        self.assertIn("never sent", " ".join(self.owner_lines()))
        self.assertLessEqual(len(self.owner_lines()), 5)
        self.assert_operator_quiet()

    async def test_invalid_utf8(self) -> None:
        """A thousand lines of invalid UTF-8: ignored, reported once, app still answered."""
        attack = await self.attack("bad-utf8")
        self.assertEqual([r["content"] for r in self.replies_to([attack])], ["bad utf8 sent"])
        self.assertIn("UTF-8", " ".join(self.owner_lines()))
        self.assertLessEqual(len(self.owner_lines()), 5)
        self.assert_operator_quiet()

    async def test_deep_json_nesting(self) -> None:
        """JSON nested 200 000 deep is refused as a line without crashing the worker's parser."""
        attack = await self.attack("deep-json")
        self.assertEqual([r["content"] for r in self.replies_to([attack])], ["deep sent"])
        self.assertIn("nested too deeply", " ".join(self.owner_lines()))
        self.assert_operator_quiet()
        self.assertFalse([r for r in self.records.records if r.levelno >= logging.ERROR
                          and "RecursionError" in r.getMessage()])
