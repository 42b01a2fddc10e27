"""Queue administration on RabbitMQ for tests, benchmarks and tools: delete queues, count messages.

Workers never need these; they use the broker interface
(:class:`vxsandbox_core.brokers.Broker`).
"""

from __future__ import annotations

from txamqp.client import ChannelClosed

from .. import dead_letter_queue
from .broker import AmqpBroker


async def delete_queues(broker: AmqpBroker, *routing_keys: str) -> None:
    """Delete queues and their dead-letter queues, e.g. after a test; missing ones are skipped."""
    connection = await broker.connected()
    for name in routing_keys:
        for queue in (name, dead_letter_queue(name)):
            try:
                async with connection.temporary_channel() as channel:
                    await channel.queue_delete(queue=queue)
            except ChannelClosed:
                pass
            connection.forget(queue)


async def queue_length(broker: AmqpBroker, routing_key: str) -> int:
    """Messages ready on a queue (not counting deliveries not yet acknowledged); 0 when it does not exist."""
    connection = await broker.connected()
    try:
        async with connection.temporary_channel() as channel:
            reply = await channel.queue_declare(queue=routing_key, passive=True)
    except ChannelClosed:
        return 0
    return int(reply.message_count)
