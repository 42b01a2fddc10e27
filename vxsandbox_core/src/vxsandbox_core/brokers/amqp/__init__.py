"""The AMQP 0-9-1 broker (RabbitMQ) over txamqp, in parts.

- :mod:`.url`: :class:`AmqpUrl` and ``DEFAULT_URL``, without txamqp
  (``vxsandbox check`` imports only this);
- :mod:`.spec`: the AMQP spec and the fixes txamqp 0.8 needs (importing it
  patches txamqp);
- :mod:`.connection`: one connection and its channels;
- :mod:`.broker`: :class:`AmqpBroker`, which reconnects;
- :mod:`.admin`: deleting queues and counting messages, for tests and tools.

The names below are imported from their modules on first use, so importing
this package (or its URL parser) loads no txamqp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .url import DEFAULT_URL, AmqpUrl

if TYPE_CHECKING:
    from .broker import AmqpBroker, AmqpConsumer
    from .connection import DEAD_LETTER_EXCHANGE, EXCHANGE, AmqpDelivery
    from .spec import load_spec

_LAZY = {
    "AmqpBroker": "broker", "AmqpConsumer": "broker",
    "AmqpDelivery": "connection", "EXCHANGE": "connection", "DEAD_LETTER_EXCHANGE": "connection",
    "load_spec": "spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEAD_LETTER_EXCHANGE", "DEFAULT_URL", "EXCHANGE", "AmqpBroker", "AmqpConsumer", "AmqpDelivery",
           "AmqpUrl", "load_spec"]
