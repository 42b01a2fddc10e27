"""``vxsandbox send`` (vxsandbox_core.send) against a real worker on the real RabbitMQ on 127.0.0.1:5672."""

from __future__ import annotations

import json
import os
import sys
import uuid

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.admin import delete_queues, queue_length
from vxsandbox_core.message import Message, TransportUserMessage
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import echo_worker_config, hooks_with
from vxsandbox_core.worker import Sandbox

pytestmark = pytest.mark.rabbitmq


class SendTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.tn = f"vxsend_{uuid.uuid4().hex[:12]}"
        self.addCleanup(lambda: Deferred.fromCoroutine(self.cleanup()))

    async def cleanup(self) -> None:
        admin = AmqpBroker(connection_name=f"vxsandbox-test cleanup {self.tn}")
        await admin.connect()
        await delete_queues(admin, f"{self.tn}.inbound", f"{self.tn}.event", f"{self.tn}.outbound")
        await admin.close()

    async def start_worker(self) -> WorkerService:
        broker = AmqpBroker(connection_name=f"vxsandbox-test worker {self.tn}")
        service = WorkerService(Sandbox(echo_worker_config(self.tn), broker=broker, hooks=hooks_with()), broker)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        return service

    async def send(self, *args: str, stdin_file: str | None = None) -> tuple[str, str, int]:
        env = {k: v for k, v in os.environ.items() if k != "VXSANDBOX_AMQP_URL"}
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "vxsandbox_core.cli", "send", *args], env=env)
        return out.decode("utf-8"), err.decode("utf-8"), code

    async def test_one_message_prints_the_reply_and_exits_0(self) -> None:
        """One message reaches the worker; its reply on <transport>.outbound is printed; exit 0."""
        service = await self.start_worker()
        out, err, code = await self.send("héllo ☕", "--transport-name", self.tn, "--session-event", "new")
        assert (out, code) == ("you> héllo ☕\napp> echo: héllo ☕\n", 0), err
        assert service.counts["ok"] == 1

    async def test_a_jsonl_file_plays_in_order_and_json_prints_vumi_replies(self) -> None:
        """A JSON-lines file is sent in order; --json prints each reply as a Vumi message answering its line."""
        await self.start_worker()
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"session_event": "new", "content": "one"}) + "\n\n")
            f.write(json.dumps({"session_event": "resume", "content": "two", "from_addr": "+27829999999"}) + "\n")
        out, err, code = await self.send("--transport-name", self.tn, "--file", path, "--json")
        assert code == 0, err
        replies = [Message.from_json(line) for line in out.splitlines()]
        assert [r["content"] for r in replies] == ["echo: one", "echo: two"]
        assert [r["to_addr"] for r in replies] == ["+27820000001", "+27829999999"]
        assert all(r["transport_name"] == self.tn for r in replies)

    async def test_no_worker_means_no_reply_and_exit_1(self) -> None:
        """Without a worker the message waits on <transport>.inbound and send says nothing came back; exit 1."""
        out, err, code = await self.send("hi", "--transport-name", self.tn, "--timeout", "1")
        assert code == 1, err
        assert out == (f"you> hi\n[no reply: nothing on {self.tn}.outbound in reply within 1s "
                       f"(is a worker consuming {self.tn}.inbound?)]\n")
        # The message was kept for the worker, not dropped for want of a queue.
        service = await self.start_worker()
        while not service.counts["ok"]:
            await self.sleep(0.05)

    async def sleep(self, seconds: float) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        await deferLater(reactor, seconds, lambda: None)

    async def test_messages_for_the_real_transport_stay_on_the_queue(self) -> None:
        """An outbound message answering none of send's messages is left for its transport."""
        await self.start_worker()
        other = AmqpBroker(connection_name=f"vxsandbox-test other {self.tn}")
        await other.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(other.close()))
        foreign = TransportUserMessage(to_addr="+1", from_addr="app", transport_name=self.tn,
                                       transport_type="sms", content="not yours")
        await other.publish(f"{self.tn}.outbound", foreign.to_json().encode())
        out, err, code = await self.send("x", "--transport-name", self.tn)
        assert (out, code) == ("you> x\napp> echo: x\n", 0), err
        assert await queue_length(other, f"{self.tn}.outbound") == 1

    async def test_bad_input_sends_nothing_and_exits_2(self) -> None:
        """A line that is not a message object, or an unreachable broker, is one clear line and exit 2."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"content": "ok"}\n[1, 2]\n')
        out, err, code = await self.send("--transport-name", self.tn, "--file", path)
        assert (out, code) == ("", 2), err
        assert f"{path} line 2: expected a JSON object of message fields" in err
        out, err, code = await self.send("--transport-name", self.tn, "--file", path + ".missing")
        assert code == 2 and "cannot read --file" in err
        out, err, code = await self.send("x")
        assert code == 2 and "give --transport-name" in err
        out, err, code = await self.send("x", "--transport-name", self.tn, "--timeout", "1",
                                         "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2F")
        assert code == 2 and "cannot reach the broker at amqp://guest@127.0.0.1:1/%2F within 1s" in err, err
