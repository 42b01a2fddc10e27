"""Hostile input from the broker: every delivery is settled with a reason and the worker keeps serving."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from ..core.bodies import hostile_bodies, sample
from .harness import ATTACKER, FaultBench, sleep, vumi_message

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.node]


class HostileInputTests(FaultBench, TestCase):
    """Bodies no transport should send, and messages for tenants nobody configured."""

    timeout = 60

    async def send_bad(self, bodies: list[bytes], **config: Any) -> None:
        await self.open_bench()
        await self.start_worker(**config)
        await self.publish(*bodies)
        # A good message sent after them is answered: the bad ones did not wedge the worker.
        await self.still_serves()
        await self.wait_settled(len(bodies) + 3)
        self.assertEqual(self.service.counts["invalid"], len(bodies))
        await self.assert_dead_letters(len(bodies))
        lines = [r.getMessage() for r in self.records.records if "invalid message" in r.getMessage()]
        self.assertEqual(len(lines), len(bodies), lines)
        self.assertTrue(all("dead-lettered" in line for line in lines))
        self.assert_no_tracebacks()

    async def test_bodies_that_are_not_json(self) -> None:
        """Garbage, invalid UTF-8 and empty bodies are dead-lettered, one log line each."""
        await self.send_bad([b"not json", b"\xff\xfe\x00garbage", b"", b"{\"truncated\": "])

    async def test_json_that_is_not_a_message(self) -> None:
        """JSON arrays, numbers, strings and foreign objects are dead-lettered."""
        await self.send_bad([b"[]", b"42", b'"hello"', b'{"hello": "world"}', b"null"])

    async def test_messages_missing_required_fields(self) -> None:
        """A user message without to_addr, from_addr or transport_name, or with a bad timestamp, is dead-lettered."""
        base = vumi_message("x", "ok")
        bodies = []
        for field in ("to_addr", "from_addr", "transport_name"):
            broken = dict(base)
            del broken[field]
            bodies.append(json.dumps(broken).encode())
        bodies.append(json.dumps(dict(base, timestamp="yesterday")).encode())
        bodies.append(json.dumps(dict(base, message_type="event")).encode())
        await self.send_bad(bodies)

    async def test_huge_message(self) -> None:
        """A 20 MiB message reaches the app and is answered; the worker serves on."""
        await self.open_bench()
        await self.start_worker(timeout=20)
        huge = vumi_message(self.tn, "ok", transport_metadata={"blob": "z" * (20 * 1024 * 1024)})
        await self.publish(huge)
        await self.wait_settled(1, timeout=60)
        await self.still_serves()
        self.assertEqual([r["content"] for r in self.replies_to([huge])], ["ok"])
        self.assertEqual(await self.dead_letters(), 0)
        self.assert_no_tracebacks()

    async def test_message_for_unknown_sandbox_id(self) -> None:
        """A message naming a tenant nobody set up runs in that tenant's own empty kv space, not another's."""
        await self.open_bench()
        await self.start_worker()
        known = [vumi_message(self.tn, "kv", sandbox_id="known") for _ in range(2)]
        for msg in known:
            await self.publish(msg)
            await self.wait_replies([msg])
        stranger = vumi_message(self.tn, "kv", sandbox_id="never-configured")
        await self.publish(stranger)
        await self.wait_replies([stranger])
        self.assertEqual([r["content"] for r in self.replies_to(known)], ["visits 1", "visits 2"])
        self.assertEqual(self.replies_to([stranger])[0]["content"], "visits 1")

    async def test_message_without_any_sandbox_id(self) -> None:
        """With no sandbox_id in the message nor the config, the message is refused and dead-lettered."""
        await self.open_bench()
        await self.start_worker(sandbox_id=None)
        orphan = vumi_message(self.tn, "ok", sandbox_id=None)
        await self.publish(orphan)
        await self.wait_settled(1)
        self.assertEqual(self.service.counts["refused"], 1)
        await self.assert_dead_letters(1)
        await self.still_serves()
        refused = [r.getMessage() for r in self.records.records if "refused" in r.getMessage()]
        self.assertTrue(refused and all("sandbox_id" in line or "dead-lettered" in line for line in refused))
        self.assert_no_tracebacks()

    async def test_bodies_that_raised_in_from_json(self) -> None:
        """Bodies that raised TypeError or OverflowError, twice amqp_prefetch_count of them, are dead-lettered."""
        base = vumi_message("x", "ok")
        bodies = [b'{"message_type": []}', b'{"message_type": {}}', b"{}",
                  json.dumps(dict(base, timestamp="0001-01-01 00:00:00+14:00")).encode()]
        await self.send_bad(bodies, amqp_prefetch_count=2)

    async def test_non_string_sandbox_id_is_refused(self) -> None:
        """A sandbox_id of 123, ["x"] or {} is dead-lettered with the reason, never run as the config's tenant."""
        await self.open_bench()
        await self.start_worker()
        odd = [vumi_message(self.tn, "kv", sandbox_id=value) for value in (123, ["x"], {})]
        await self.publish(*odd)
        await self.wait_settled(3)
        self.assertEqual(self.service.counts["refused"], 3)
        await self.assert_dead_letters(3)
        await self.still_serves()
        self.assertEqual(self.replies_to(odd), [])
        refused = [r.getMessage() for r in self.records.records if "field 'sandbox_id'" in r.getMessage()]
        self.assertEqual(len(refused), 3, refused)
        self.assert_no_tracebacks()

    async def test_lone_surrogates_and_deep_nesting_do_not_wedge(self) -> None:
        """With max_children 2, messages with lone surrogates are answered and ~960-deep ones dead-lettered."""
        await self.open_bench()
        await self.start_worker(max_children=2, amqp_prefetch_count=8)
        # Built as text: json in a deep stack would itself hit the recursion limit.
        halves = [json.dumps(vumi_message(self.tn, "ok", transport_metadata={"udh": "\ud83d"})).encode()
                  for _ in range(4)]
        deep = [json.dumps(vumi_message(self.tn, "ok", transport_metadata="X")).encode().replace(
                b'"X"', b'{"a":' * depth + b"1" + b"}" * depth) for depth in (900, 940, 960, 980)]
        await self.publish(*halves, *deep)
        await self.still_serves()
        await self.wait_settled(8 + 3)
        self.assertEqual(self.service.counts["ok"], 4 + 3)
        self.assertEqual(self.service.counts["invalid"], 4)
        await self.assert_dead_letters(4)
        answered = [r for r in self.replies if r["content"] == "ok"]
        self.assertIn({"udh": "\ufffd"}, [r["transport_metadata"] for r in answered])
        nested = [r.getMessage() for r in self.records.records if "nested" in r.getMessage()]
        self.assertEqual(len(nested), 4, nested)
        self.assert_no_tracebacks()

    async def test_lone_surrogates_from_the_app(self) -> None:
        """Half characters in an app's cmd_id, kv values, log lines and reply become U+FFFD: one report, no hang."""
        await self.open_bench()
        await self.start_worker(javascript=HALVES_APP)
        msg = vumi_message(self.tn, "go", sandbox_id=ATTACKER)
        await self.publish(msg)
        await self.wait_replies([msg])
        await self.wait_settled(1)
        self.assertEqual(self.replies_to([msg])[0]["content"], "split \ufffd|raw v\ufffd|\ufffd")
        # "ok", not "error": the run ended with api.done(), not at its 3 s timeout.
        self.assertEqual(dict(self.service.counts), {"ok": 1})
        owner = self.owner_lines()
        reports = [line for line in owner if "surrogate" in line]
        self.assertEqual(len(reports), 2, owner)
        self.assertIn("lone UTF-16 surrogates", reports[0])
        self.assertRegex(reports[1], r"^\d+ more lines with lone surrogates repaired in this run$")
        self.assertIn("log line \ufffd", owner)
        self.assert_operator_quiet(max_lines=2)

    async def test_fuzzed_bodies_through_rabbitmq(self) -> None:
        """300 Hypothesis bodies on both queues are each acked or dead-lettered; the worker still answers."""
        await self.open_bench()
        await self.start_worker()
        inbound, event = sample(hostile_bodies(self.tn), 200), sample(hostile_bodies(self.tn, "event"), 100)
        await self.publish(*inbound)
        await self.publish(*event, queue="event")
        await self.wait_settled(len(inbound) + len(event), timeout=240)
        counts = self.service.counts
        self.assertEqual(counts["failed"], 0, dict(counts))
        self.assertGreater(counts["ok"], 30, dict(counts))
        expected, deadline = counts["invalid"] + counts["refused"], time.monotonic() + 10
        # A reject reaches the dead-letter queue asynchronously.
        while (dead := await self.dead_letters() + await self.dead_letters("event")) < expected \
                and time.monotonic() < deadline:
            await sleep(0.05)
        self.assertEqual(dead, expected, dict(counts))
        self.assertEqual(await self.transport.queue_length(f"{self.tn}.inbound"), 0)
        self.assertEqual(await self.transport.queue_length(f"{self.tn}.event"), 0)
        await self.still_serves()
        invalid = [r for r in self.records.records if "invalid message" in r.getMessage()]
        self.assertEqual(len(invalid), counts["invalid"])
        self.assertFalse([r.getMessage()[:200] for r in self.records.records if r.levelno >= logging.ERROR
                          and r.exc_info], "a body raised something other than a MessageError")

    test_fuzzed_bodies_through_rabbitmq.timeout = 300  # type: ignore[attr-defined]


#: An app that sends half characters every way it can: a raw line with its own cmd_id, kv, log, reply.
HALVES_APP = r"""
var fs = require('fs');
api.on_inbound_message = function (command) {
    var self = this;
    var msg = command.msg;
    fs.writeSync(1, JSON.stringify({cmd: 'kv.set', cmd_id: 'raw-\ud800', reply: false, key: 'raw',
                                    value: 'v\udc00'}) + '\n');
    for (var i = 0; i < 20; i++) { self.request('log.info', {msg: 'log line \udbff'}); }
    self.request('kv.set', {key: 'half', value: 'split \ud83d'}, function () {
        self.request('kv.get', {key: 'half'}, function (half) {
            self.request('kv.get', {key: 'raw'}, function (raw) {
                self.request('outbound.reply_to', {in_reply_to: msg.message_id, continue_session: false,
                                                   content: half.value + '|raw ' + raw.value + '|\udfff'},
                             function () { self.done(); });
            });
        });
    });
};
"""
