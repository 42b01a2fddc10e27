"""The brokers' shared interface (the Broker protocol) and the AMQP package's layering, without RabbitMQ."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vxsandbox_core.brokers import Broker, Received
from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.memory import MemoryBroker

AMQP = Path(__file__).resolve().parents[2] / "vxsandbox_core" / "src" / "vxsandbox_core" / "brokers" / "amqp"
PROTOCOL_METHODS = ["connect", "publish", "consume", "get", "close"]


def test_protocol_declares_the_shared_interface() -> None:
    """The Broker protocol is the whole shared interface, each method documented."""
    declared = [name for name, _ in inspect.getmembers(Broker, inspect.isfunction) if not name.startswith("_")]
    assert sorted(declared) == sorted(PROTOCOL_METHODS)
    assert all(getattr(Broker, name).__doc__ for name in declared)


@pytest.mark.parametrize("broker_class", [AmqpBroker, MemoryBroker])
@pytest.mark.parametrize("method", PROTOCOL_METHODS)
def test_both_brokers_satisfy_the_protocol(broker_class: type, method: str) -> None:
    """Each broker's method is async with the protocol's parameters and return type (get gives Received on both)."""
    ours = getattr(broker_class, method)
    theirs = getattr(Broker, method)
    assert inspect.iscoroutinefunction(ours), (broker_class, method)
    ours_sig, theirs_sig = inspect.signature(ours), inspect.signature(theirs)
    assert list(ours_sig.parameters) == list(theirs_sig.parameters)
    if method in ("get", "connect", "publish", "close"):
        assert ours_sig.return_annotation == theirs_sig.return_annotation
    assert isinstance(broker_class(), Broker)




def test_memory_get_gives_body_and_headers() -> None:
    """The in-memory broker's get returns the same Received shape as RabbitMQ's (empty headers)."""
    from twisted.internet.defer import ensureDeferred
    broker = MemoryBroker()
    ensureDeferred(broker.publish("q", b"x"))
    got: list[Received] = []
    ensureDeferred(broker.get("q")).addCallback(got.append)
    assert got == [Received(b"x", {})]
    assert got[0].body == b"x" and got[0].headers == {}


def test_url_parser_loads_no_txamqp() -> None:
    """Importing the AMQP URL parser and checking a config (as vxsandbox check does) never loads txamqp."""
    script = textwrap.dedent("""
        import sys
        from vxsandbox_core.brokers.amqp.url import AmqpUrl
        from vxsandbox_core.brokers.amqp import DEFAULT_URL
        from vxsandbox_core.cli import check_config
        from vxsandbox_core.testing import echo_worker_config
        assert AmqpUrl.parse(DEFAULT_URL).vhost == "/"
        lines, errors = check_config(echo_worker_config("t"))
        assert not errors, errors
        print(sorted(m for m in sys.modules if m.split(".")[0] == "txamqp"))
        import vxsandbox_core.brokers.amqp.broker
        print("txamqp" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "True"]


def test_the_broker_uses_no_private_member_of_the_connection() -> None:
    """broker.py and admin.py touch no underscored attribute of anything but ``self``."""
    for name in ("broker.py", "admin.py"):
        tree = ast.parse((AMQP / name).read_text(encoding="utf-8"))
        private = [f"{ast.unparse(node)} (line {node.lineno})" for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__")
                   and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
        assert private == [], name
