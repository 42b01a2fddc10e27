"""Spawning a sandboxed child with rlimits, a timeout and an output limit, and reading its JSON lines.

Limits are applied by util-linux's ``prlimit``, which sets them and then
execs the program, so they hold from the child's first instruction and cost
under a millisecond. A limit is never raised above what the worker itself
has: the child gets ``min(requested, worker's own)`` for soft and hard.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .errors import ConfigError, ProtocolError
from .protocol import Command, decode, encode

if TYPE_CHECKING:
    from .dispatch import SandboxApi

log = logging.getLogger(__name__)

_PRLIMIT_OPTIONS = {
    getattr(resource, "RLIMIT_" + name.upper()): name
    for name in ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                 "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
    if hasattr(resource, "RLIMIT_" + name.upper())
}
_INF = resource.RLIM_INFINITY


def _min_limit(a: int, b: int) -> int:
    if a == _INF:
        return b
    if b == _INF:
        return a
    return min(a, b)


def clamp_rlimits(limits: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Lower each requested limit to the worker's own, so a config can never raise one."""
    clamped = {}
    for number, (soft, hard) in limits.items():
        own_soft, own_hard = resource.getrlimit(number)
        new_hard = _min_limit(hard, own_hard)
        clamped[number] = (_min_limit(_min_limit(soft, own_soft), new_hard), new_hard)
    return clamped


def find_prlimit() -> str:
    """Return the path of util-linux's ``prlimit``.

    :raises ConfigError: it is not installed.
    """
    path = shutil.which("prlimit") or next(
        (p for p in ("/usr/bin/prlimit", "/bin/prlimit") if os.access(p, os.X_OK)), None)
    if path is None:
        raise ConfigError("rlimits", "applying rlimits needs the 'prlimit' program from util-linux, "
                                     "which is not on PATH (apt-get install util-linux)")
    return path


def rlimit_argv(limits: dict[int, tuple[int, int]]) -> list[str]:
    """The ``prlimit`` arguments that apply ``limits`` (already clamped) to the program after them."""
    def fmt(v: int) -> str:
        return "unlimited" if v == _INF else str(v)
    argv = [find_prlimit()]
    for number, (soft, hard) in sorted(limits.items()):
        argv.append(f"--{_PRLIMIT_OPTIONS[number]}={fmt(soft)}:{fmt(hard)}")
    argv.append("--")
    return argv


def find_executable(executable: str, key: str = "executable") -> str:
    """Resolve a program name on PATH (the child's empty environment has no PATH to search)."""
    if os.sep in executable:
        if not os.access(executable, os.X_OK):
            raise ConfigError(key, f"{executable!r} is not an executable file")
        return executable
    found = shutil.which(executable)
    if found is None:
        raise ConfigError(key, f"no program named {executable!r} on PATH")
    return found


@dataclass
class SandboxResult:
    """How a sandbox run ended."""

    #: the child's exit status, or None when it died of a signal
    exit_code: int | None
    #: the signal that ended it, or None
    signal: int | None
    #: why the worker ended it ("timeout", "recv_limit", "unknown command", ...), or None
    kill_reason: str | None
    #: True when the app said it was done (e.g. ``js.done``) before it was stopped
    finished: bool
    #: seconds from spawn to exit
    duration: float

    @property
    def ok(self) -> bool:
        """The run ended the way a healthy app ends."""
        if self.kill_reason is not None:
            return False
        return self.finished or self.exit_code == 0

    def describe(self) -> str:
        """A short phrase for logs: 'exited with 0', 'killed: timeout', ..."""
        if self.kill_reason is not None:
            return f"killed: {self.kill_reason}"
        if self.finished:
            return "finished"
        if self.signal is not None:
            return f"died of signal {self.signal}"
        return f"exited with {self.exit_code}"


class SandboxProtocol(ProcessProtocol):
    """One sandboxed child: spawns it, feeds it commands, reads its requests, enforces limits.

    :param api: the run's :class:`SandboxApi`; requests go to its ``dispatch_request``.
    :param executable: absolute path of the program.
    :param args: its arguments (without the program name).
    :param env: its whole environment (nothing is inherited from the worker).
    :param path: its working directory, or None for the worker's.
    :param timeout: seconds before it is killed.
    :param recv_limit: bytes of stdout plus stderr before it is killed.
    :param rlimits: ``{RLIMIT number: (soft, hard)}``, clamped to the worker's own.
    """

    def __init__(self, api: SandboxApi, executable: str, args: list[str], env: dict[str, str],
                 path: str | None, timeout: float, recv_limit: int,
                 rlimits: dict[int, tuple[int, int]], reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.api = api
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.timeout = timeout
        self.recv_limit = recv_limit
        self.rlimits = clamp_rlimits(rlimits)
        self.received = 0
        self.kill_reason: str | None = None
        self.finished = False
        self.ended = False
        self.pid: int | None = None
        self._out = bytearray()
        self._err = bytearray()
        self._pending: set[Deferred[Any]] = set()
        self._started = 0.0
        self._timer: Any = None
        self.result: SandboxResult | None = None
        self._waiters: list[Deferred[SandboxResult]] = []
        api.set_sandbox(self)

    def spawn(self) -> None:
        """Start the child under its limits and arm the timeout."""
        argv = rlimit_argv(self.rlimits) + [self.executable, *self.args]
        self._started = time.monotonic()
        IReactorProcess(self.reactor).spawnProcess(
            self, argv[0], argv, env=self.env, path=self.path)
        self._timer = IReactorTime(self.reactor).callLater(self.timeout, self.kill, "timeout")

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    # --- talking to the child -------------------------------------------------

    def send(self, command: Command) -> bool:
        """Write one command to the child; returns False (and drops it) if the child has gone."""
        if self.ended or self.transport is None:
            return False
        self.transport.write(encode(command))
        return True

    def kill(self, reason: str) -> None:
        """Kill the child now, recording why (the first reason wins)."""
        if self.ended:
            return
        if self.kill_reason is None and not self.finished:
            self.kill_reason = reason
        self._signal("KILL")

    def finish(self) -> None:
        """End a child whose app said it is done: the run counts as a success."""
        if self.ended:
            return
        if self.kill_reason is None:
            self.finished = True
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except (twisted_error.ProcessExitedAlready, AttributeError, OSError):
            pass

    # --- reading from the child -----------------------------------------------

    def _count(self, data: bytes) -> bool:
        self.received += len(data)
        if self.received > self.recv_limit:
            if self.kill_reason is None and not self.finished:
                self.api.report(f"sandbox wrote more than recv_limit ({self.recv_limit} bytes) "
                                "to stdout and stderr; killing it", logging.ERROR)
            self.kill("recv_limit")
            return False
        return True

    def outReceived(self, data: bytes) -> None:
        if self.ended or self.kill_reason or not self._count(data):
            return
        self._out += data
        for line in self._lines(self._out):
            self._line_received(line)

    def errReceived(self, data: bytes) -> None:
        if self.ended or self.kill_reason or not self._count(data):
            return
        self._err += data
        for line in self._lines(self._err):
            text = line.decode("utf-8", "replace").rstrip("\r")
            if text:
                self.api.log(text, logging.ERROR)

    @staticmethod
    def _lines(buffer: bytearray) -> list[bytes]:
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[:end + 1]
        return lines

    def _line_received(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            command = decode(line)
        except ProtocolError as e:
            shown = line[:200].decode("utf-8", "replace")
            self.api.report(f"sandbox sent an invalid line, ignored: {e}: {shown!r}", logging.WARNING)
            return
        if command["reply"]:
            self.api.report(f"sandbox sent a reply to a command it was never sent, ignored: "
                            f"{command['cmd']!r} cmd_id {command['cmd_id']!r}", logging.WARNING)
            return
        d = self.api.dispatch_request(command)
        self._pending.add(d)
        d.addBoth(self._request_done, d)

    def _request_done(self, result: Any, d: Deferred[Any]) -> Any:
        self._pending.discard(d)
        if isinstance(result, Failure):
            log.error("sandbox %s: request dispatch failed: %s", self.api.sandbox_id, result.getTraceback())
        return None

    @property
    def pending_requests(self) -> int:
        """Requests from the child whose handlers have not finished."""
        return len(self._pending)

    # --- the end --------------------------------------------------------------

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        value = reason.value
        exit_code = getattr(value, "exitCode", None)
        signal = getattr(value, "signal", None)
        result = SandboxResult(exit_code, signal, self.kill_reason, self.finished,
                               time.monotonic() - self._started)
        # Handlers still running (an outbound publish, an HTTP call) finish before the run
        # counts as ended, so nothing the app asked for is lost when its delivery is acked.
        if self._pending:
            dl = DeferredList(list(self._pending), consumeErrors=True)
            dl.addCallback(lambda _: self._fire(result))
        else:
            self._fire(result)

    def _fire(self, result: SandboxResult) -> None:
        self.result = result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(result)

    def wait(self) -> Deferred[SandboxResult]:
        """A Deferred fired with the :class:`SandboxResult` once the child and its requests are done."""
        if self.result is not None:
            return succeed(self.result)
        d: Deferred[SandboxResult] = Deferred()
        self._waiters.append(d)
        return d
