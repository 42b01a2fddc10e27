"""V8 code caches for JavaScript children: made once by a producer the worker runs, only read by children.

Node's own code cache covers its built-in modules under its default V8 flags
only; sandbox children run with ``--max-old-space-size`` and the permission
model, so each would compile the app, the toolkit and its libraries from
source. With ``code_cache`` on, the worker at start-up runs
``compile_cache.js`` as a producer (same node, same flags and limits as a
child, and the same OS jail) on the app's code and the modules reachable
from it by literal ``require`` calls. The producer only compiles: it runs
none of that code, so nothing an app or module does can shape what another
child is handed. The worker writes the entries it prints, each atomically,
into a directory of its own (``vxsandbox-code-cache-*`` under the temporary
directory, one subdirectory per node version and heap size), removed when
the worker stops. Children get ``--code-cache=<that subdirectory>`` and may
only read it.

The cache is offered only where children cannot write files at all (Node's
permission model is on), since a child able to write an entry another child
reads could hand it code. An entry is used only when it was made from
exactly the source being compiled, by the same node with the same V8 flags,
and its checksum holds (``--verify-snapshot-checksum``); anything else is
compiled from source (see ``compile_cache.js``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import shutil
import tempfile
from functools import lru_cache
from importlib import resources
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

log = logging.getLogger("vxsandbox.worker")

#: V8 checks a code cache's checksum only with this flag; the producer and every reader get it
VERIFY_FLAG = "--verify-snapshot-checksum"
#: bytes the producer may print before it is stopped (base64 entries of a large app tree)
MAX_OUTPUT = 256 * 1024 * 1024
#: seconds the producer may take before the worker gives up and starts without a cache
PRODUCE_TIMEOUT = 60.0
_ENTRY_NAME = re.compile(r"^(app|module)-[0-9a-f]{16}$")


@lru_cache(maxsize=1)
def compile_cache_path() -> str:
    """The absolute path of ``compile_cache.js`` (the child's reader and the producer)."""
    return str(resources.files("vxsandbox_js").joinpath("compile_cache.js"))


@lru_cache(maxsize=1)
def preload_path() -> str:
    """The absolute path of ``preload.js``, which the runner requires at start."""
    return str(resources.files("vxsandbox_js").joinpath("preload.js"))


def subdirectory(node_version: str, max_old_space_size: int | None) -> str:
    """The cache's subdirectory name for one node version and heap size (V8 rejects others anyway)."""
    return f"node-{node_version}-heap-{max_old_space_size or 'default'}"


class _Producer(ProcessProtocol):
    """Collects the producer's JSON lines; ``done`` fires with them when it exits."""

    def __init__(self, job: bytes) -> None:
        self.job = job
        self.out = bytearray()
        self.err = bytearray()
        self.done: Deferred[list[dict[str, Any]]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.job)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > MAX_OUTPUT:
            self.transport.signalProcess("KILL")

    def errReceived(self, data: bytes) -> None:
        self.err += data[:4096]

    def processEnded(self, reason: Failure) -> None:
        lines = [line for line in bytes(self.out).split(b"\n") if line.strip()]
        try:
            parsed = [json.loads(line) for line in lines]
        except ValueError:
            parsed = []
        if not parsed or not isinstance(parsed[-1], dict) or parsed[-1].get("done") is not True:
            self.done.errback(RuntimeError(
                f"the code cache producer ended without finishing ({reason.value}); "
                f"it said: {bytes(self.err).decode('utf-8', 'replace').strip()[:500]!r}"))
            return
        self.done.callback([entry for entry in parsed[:-1] if isinstance(entry, dict)])


def _write_entries(directory: str, entries: list[dict[str, Any]]) -> int:
    """Write each entry as a file of ``directory`` atomically; returns how many were written."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = 0
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str) or not _ENTRY_NAME.match(name):
            continue
        try:
            data = base64.b64decode(entry.get("entry", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            continue
        # A reader must never see half an entry: write aside, then rename over.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name))
        written += 1
    return written


def new_root() -> str:
    """A fresh directory for one worker's caches, readable by children running under other uids."""
    root = tempfile.mkdtemp(prefix="vxsandbox-code-cache-")
    os.chmod(root, 0o755)
    return root


def remove_root(root: str) -> None:
    """Remove a worker's cache directory and everything in it."""
    shutil.rmtree(root, ignore_errors=True)


async def produce(reactor: Any, argv: list[str], job: dict[str, Any], directory: str,
                  timeout: float = PRODUCE_TIMEOUT) -> int:
    """Run the producer ``argv`` on ``job`` and store its entries in ``directory``; returns their number.

    :param argv: the whole command (limits, jail, node, flags, ``compile_cache.js``).
    :param job: ``{"app": {"source", "filename"}, "from": filename, "modules": [names]}``.
    :raises RuntimeError: the producer failed or took longer than ``timeout`` seconds.
    """
    producer = _Producer(json.dumps(job).encode("utf-8"))
    IReactorProcess(reactor).spawnProcess(producer, argv[0], argv, env={})
    producer.done.addTimeout(timeout, reactor, onTimeoutCancel=lambda *_: _timed_out(producer, timeout))
    entries = await producer.done
    written: int = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), _write_entries,
                                                   directory, entries)
    return written


def _timed_out(producer: _Producer, timeout: float) -> None:
    try:
        producer.transport.signalProcess("KILL")
    except Exception:
        pass
    raise RuntimeError(f"the code cache producer took longer than {timeout}s")
