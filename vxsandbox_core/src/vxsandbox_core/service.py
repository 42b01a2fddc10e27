"""Connecting a worker to a broker: consume a transport's queues, run the sandbox, then settle.

:class:`WorkerService` consumes ``<transport_name>.inbound`` (user messages)
and ``<transport_name>.event`` (events). Every delivery is handled at once,
so up to the broker's prefetch count of sandbox runs are in flight per
queue. What becomes of a delivery:

- the run ended (``ok`` or ``error``: the app crashed or timed out, which
  running it again would not fix): **acked**, only after the run ended and
  everything it published was confirmed by the broker (at-least-once);
- the body is not a Vumi message of the queue's kind (not UTF-8 JSON, not
  an object, nested deeper than the message model allows, a field missing
  or of the wrong type, a timestamp out of range; any exception while
  reading it counts): logged with the reason and **rejected without
  requeue**, so it moves to the dead-letter queue ``<queue>.dead``;
- the worker refused it (``refused``: no ``sandbox_id`` in the message or
  the config, a ``sandbox_id`` that is not a string, or a message that
  could not be written to the child): logged with the reason and
  dead-lettered the same way, so an operator can fix the config and
  shovel the messages back;
- the worker itself failed (a bug): logged with the traceback and
  dead-lettered, so one poison message cannot loop forever;
- it arrived while the service was stopping, or its run was still going
  ``shutdown_timeout`` seconds after the stop began and was killed, or its
  run was killed for another run's fault in the same child (``runs_per_child``
  above 1; ``interrupted``): requeued, for another worker or another child.

Starting also raises the worker's own soft ``RLIMIT_NOFILE`` to its hard
limit: every child's pipes and every outbound connection cost descriptors,
and a distribution's default soft limit (often 1024) runs out long before
the hard one. Children keep their own, much lower, limit.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from .aio import call_deferred
from .brokers import Broker, Consumer, Delivery
from .errors import ConfigError, MessageError
from .message import Message, TransportEvent, TransportUserMessage

log = logging.getLogger("vxsandbox.service")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the (old, new) soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit (RLIMIT_NOFILE) from %d to %d: %s", soft, hard, e)
            return soft, soft
        log.info("raised the open files limit (RLIMIT_NOFILE) from %d to %d", soft, hard)
    return soft, hard


class WorkerService:
    """Runs a worker on a broker until stopped.

    :param worker: a :class:`~vxsandbox_core.worker.Sandbox` (or subclass) whose
        ``broker`` is the same broker, so its replies go out through it.
    :param broker: a connected-on-start :class:`~vxsandbox_core.brokers.Broker`.
    :param transport_name: the transport whose queues to consume (default: the config's).
    """

    #: seconds :meth:`stop` waits for killed runs to settle before closing anyway
    SETTLE_TIMEOUT = 2.0

    def __init__(self, worker: Any, broker: Broker, transport_name: str | None = None) -> None:
        transport_name = transport_name or worker.config.transport_name
        if not transport_name:
            raise ConfigError("transport_name", "is required to consume from a broker "
                                                "(the worker reads <transport_name>.inbound and .event)")
        self.worker = worker
        self.broker = broker
        self.transport_name = transport_name
        self.consumers: list[Consumer] = []
        self.in_flight: set[Deferred[None]] = set()
        #: deliveries by fate: ok, error, refused, invalid, failed, requeued
        self.counts: Counter[str] = Counter()
        self.stopping = False
        self._started = False

    @property
    def queues(self) -> list[str]:
        """The queues this service consumes."""
        return [f"{self.transport_name}.inbound", f"{self.transport_name}.event"]

    async def start(self) -> None:
        """Raise the open files limit, set the worker up, connect the broker and start consuming."""
        raise_open_files_limit()
        await self.worker.setup()
        self._started = True
        await self.broker.connect()
        inbound, event = self.queues
        self.consumers.append(await self.broker.consume(inbound, self._on_inbound))
        self.consumers.append(await self.broker.consume(event, self._on_event))
        log.info("consuming %s and %s", inbound, event)

    async def stop(self) -> None:
        """Stop consuming, let in-flight runs finish and settle, close the broker, tear the worker down."""
        if self.stopping:
            return
        self.stopping = True
        for consumer in self.consumers:
            try:
                await consumer.cancel()
            except Exception as e:
                log.warning("could not cancel the consumer of %s: %s", consumer.routing_key, e)
        if self.in_flight:
            limit = float(self.worker.config.shutdown_timeout)
            log.info("waiting up to %.0fs for %d sandbox run(s) in flight", limit, len(self.in_flight))
            if not await self._settled(limit):
                log.warning("%d sandbox run(s) still in flight after %.0fs (shutdown_timeout); killing them, "
                            "their messages go back to the queue", len(self.in_flight), limit)
                self.worker.kill_all()
                if not await self._settled(self.SETTLE_TIMEOUT):
                    log.error("%d delivery(ies) not settled; closing anyway (the broker delivers them again)",
                              len(self.in_flight))
        await self.broker.close()
        if self._started:
            await self.worker.teardown()
        log.info("stopped; deliveries: %s", dict(self.counts) or "none")

    async def _settled(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every delivery in flight to be settled (never cancelling them)."""
        from twisted.internet import reactor

        done: Deferred[bool] = Deferred()
        timer = reactor.callLater(seconds, done.callback, False)

        def all_settled(_: Any) -> None:
            if not done.called:
                timer.cancel()
                done.callback(True)

        DeferredList(list(self.in_flight), consumeErrors=True).addCallback(all_settled)
        return await done

    # --- deliveries -------------------------------------------------------------------

    def _on_inbound(self, delivery: Delivery) -> Deferred[None]:
        return self._track(call_deferred(self._handle, delivery, TransportUserMessage))

    def _on_event(self, delivery: Delivery) -> Deferred[None]:
        return self._track(call_deferred(self._handle, delivery, TransportEvent))

    def _track(self, d: Deferred[None]) -> Deferred[None]:
        self.in_flight.add(d)

        def done(result: Any) -> Any:
            self.in_flight.discard(d)
            return result
        d.addBoth(done)
        return d

    async def _handle(self, delivery: Delivery, kind: type[Message]) -> None:
        if self.stopping:
            self.counts["requeued"] += 1
            await delivery.reject(requeue=True)
            return
        try:
            msg = Message.from_json(delivery.body)
            if not isinstance(msg, kind):
                raise MessageError(f"field 'message_type': {delivery.routing_key} carries "
                                   f"{kind.message_type!r} messages, got {msg.message_type!r}")
        except Exception as e:
            self.counts["invalid"] += 1
            # A MessageError names the field; anything else is a gap in validation, so keep its traceback.
            log.error("invalid message on %s, dead-lettered to %s.dead: %s; body starts %r",
                      delivery.routing_key, delivery.routing_key,
                      e if isinstance(e, MessageError) else f"{type(e).__name__}: {e}", delivery.body[:120],
                      exc_info=not isinstance(e, MessageError))
            await delivery.reject(requeue=False)
            return
        try:
            if isinstance(msg, TransportUserMessage):
                outcome = await self.worker.process_message(msg)
            else:
                outcome = await self.worker.process_event(msg)
        except Exception:
            self.counts["failed"] += 1
            log.exception("worker failed on %s from %s; dead-lettered", _ref(msg), delivery.routing_key)
            await delivery.reject(requeue=False)
            return
        self.counts[outcome] += 1
        if outcome == "interrupted":
            # The worker stopped before the app handled it: another worker (or this one, later) must.
            await delivery.reject(requeue=True)
        elif outcome == "refused":
            log.error("%s from %s refused by the worker (reason logged above); dead-lettered to %s.dead",
                      _ref(msg), delivery.routing_key, delivery.routing_key)
            await delivery.reject(requeue=False)
        else:
            await delivery.ack()


def _ref(msg: Message) -> str:
    ident = msg.get("message_id") if isinstance(msg, TransportUserMessage) else msg.get("event_id")
    return f"{msg.message_type} {ident}"
