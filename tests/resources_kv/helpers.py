"""Shared pieces of the kv tests: workers driving real children, Redis checks and a throwaway redis-server."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import SkipTest

from vxsandbox_core import SandboxApi, SandboxResource
from vxsandbox_core.protocol import Command
from vxsandbox_core.testing import (
    FakeSandboxApi,
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)
from vxsandbox_core.worker import Sandbox

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # the latter from one with a password
    except OSError:
        return False


def missing(what: str) -> None:
    """Fail under CI=true, else skip, naming the missing service."""
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{what} is needed by this test and is missing (CI=true)")
    raise SkipTest(f"{what} is missing")


def require_redis() -> None:
    """Skip (or fail under CI) unless the shared Redis answers on 127.0.0.1:6379."""
    if not _answers(REDIS_HOST, REDIS_PORT):
        missing(f"Redis on {REDIS_HOST}:{REDIS_PORT}")


def unique_prefix() -> str:
    """A key_prefix no other test (or agent) uses."""
    return f"test-kv-{uuid.uuid4().hex}"


async def delete_prefixed(prefix: str, port: int = REDIS_PORT) -> int:
    """Delete every key under ``prefix:`` (test cleanup); returns how many there were."""
    import txredisapi
    conn = await txredisapi.Connection(REDIS_HOST, port, reconnect=False, convertNumbers=False)
    try:
        names = await conn.keys(prefix + ":*")
        if names:
            await conn.delete(names)
        return len(names)
    finally:
        await conn.disconnect()


async def sleep(seconds: float) -> None:
    """Wait without blocking the reactor."""
    await task.deferLater(reactor, seconds, lambda: None)


class LogRecorder(SandboxResource):
    """A logging resource (``logging_resource: log``) that keeps the lines logged for the app's owner."""

    lines: list[tuple[str, int, str]]

    def setup(self) -> None:
        self.lines = []

    def log(self, api: SandboxApi, msg: str, level: int) -> None:
        self.lines.append((api.sandbox_id, level, msg))


class ScriptedSandbox(Sandbox):
    """The generic worker running a :func:`python_child` whose requests each test sets in ``requests``."""

    requests: list[dict[str, Any]] = []

    def sandbox_args(self, api: SandboxApi) -> list[str]:
        return python_child(self.requests)


class KVWorkerMixin:
    """Builds a worker with a ``kv`` resource and runs real children through it.

    Subclasses set :meth:`kv_options` (backend-specific options).
    """

    backend = "memory"

    def kv_options(self) -> dict[str, Any]:
        return {"backend": "memory"}

    async def make_worker(self, **options: Any) -> ScriptedSandbox:
        kv = {"cls": "kv", **self.kv_options(), **options}
        # the module's name depends on pytest's import mode, so ask it
        sandbox = {"kv": kv, "log": {"cls": f"{LogRecorder.__module__}:LogRecorder"}}
        # Quota tests send more than the default 100 requests at once; that cap has its own tests.
        config = python_worker_config([], sandbox=sandbox, logging_resource="log", max_pending_requests=1000)
        worker = ScriptedSandbox(config, broker=RecordingBroker(), hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)  # type: ignore[attr-defined]
        return worker

    async def run_child(self, worker: ScriptedSandbox, requests: list[dict[str, Any]],
                        sandbox_id: str = "tenant-a") -> list[Command]:
        """Run one real child sending ``requests`` as ``sandbox_id``; return the replies it received."""
        worker.requests = requests
        outcome = await worker.process_message(make_user_message(sandbox_id=sandbox_id))
        assert outcome == "ok", outcome
        replies: list[Command] = worker.resources.resources["record"].replies()  # type: ignore[attr-defined]
        assert len(replies) == len(requests) and all(r is not None for r in replies), replies
        return replies

    def owner_log(self, worker: ScriptedSandbox) -> list[tuple[str, int, str]]:
        return worker.resources.resources["log"].lines  # type: ignore[attr-defined]

    def fake_api(self, sandbox_id: str) -> FakeSandboxApi:
        return FakeSandboxApi(sandbox_id=sandbox_id)


class RedisServer:
    """A throwaway redis-server on a free port (never the shared one), with no persistence."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing("the redis-server program")
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, *options: str) -> None:
        """Start it with the given extra ``redis-server`` options and wait until it answers."""
        assert self.binary is not None
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--enable-debug-command", "local", *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"redis-server did not start on port {self.port}")
            await sleep(0.05)

    async def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            while self.process.poll() is None:
                await sleep(0.02)
        self.process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def warnings_in(lines: list[tuple[str, int, str]]) -> list[str]:
    """The messages of the warning lines among ``(sandbox_id, level, msg)`` log lines."""
    return [msg for _, level, msg in lines if level == logging.WARNING]
