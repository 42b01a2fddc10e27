"""Spawning a sandboxed child with rlimits, and running messages in it under a timeout and an output limit.

The child's command starts with the ``prlimit`` arguments of
:mod:`vxsandbox_core.rlimits`, so its limits hold from its first instruction.

A child serves *runs* (one message or event each): one at a time unless
``runs_at_once`` > 1. A cold child serves one run and is killed when it
ends; a warm child (``max_runs`` > 1) goes back to its pool after a run that
ended cleanly. Anything unusual (a timeout, a kill, a crash, output between
runs, requests still pending when the app said it was done) retires the
child.

A child serving several runs at once (its runtime must support it, as the
JavaScript runner does) keeps each run apart by its number: the worker adds
``run_id`` to every line it sends for a run, and the child adds it to every
line it writes for one; lines of such a child that name no run it is serving
are ignored. Each run keeps its own timeout, request counts and pending
requests; what the process does as a whole (its output, which counts against
every run it is serving, its stderr, its end) touches all of them. A kill for
one run's fault ends the others too, each with the reason
``another run's <reason>``: they share one process, as they share one tenant
and one version of its code. Such a run is a bystander (:attr:`SandboxResult.bystander`):
its own message was never the problem, so the worker has it delivered again. So
are the runs beside one the child names as the reason it ends (a line of that run
marked ``"fatal": true``, as the JavaScript runner marks its report of an uncaught
exception): they end as ``another run's fatal error``. An unexplained crash ends
them all as errors.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .aio import default_reactor
from .errors import ConfigError, ProtocolError
from .protocol import Command, decode, encode, make_error_reply

if TYPE_CHECKING:
    from .api import SandboxApi

log = logging.getLogger(__name__)

#: how the kill reason of a run ended for another run's fault begins (``another run's timeout``)
ANOTHER_RUNS = "another run's "

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


def queued_bytes(protocol: ProcessProtocol) -> int:
    """Bytes written to a child's stdin that it has not read yet (still in the worker's buffer)."""
    pipes = getattr(protocol.transport, "pipes", None) or {}
    writer = pipes.get(0)
    if writer is None:
        return 0
    return queued_bytes_of(writer)


def queued_bytes_of(writer: Any) -> int:
    """Bytes a Twisted writer still holds (it offers no public count: these are its two buffers)."""
    held: int = len(writer.dataBuffer) - writer.offset + writer._tempDataLen
    return held


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to a child's stdin: straight into the pipe when nothing is queued before it.

    Twisted's ``write`` always queues and writes on a later reactor turn, which
    costs two ``epoll_ctl`` calls and a turn per line. When its queue is empty
    and the pipe has room, the line goes into the pipe now; whatever does not
    fit (or any error: the child may have gone) is left to the transport, which
    keeps the order and reports the error as usual.
    """
    pipes = getattr(transport, "pipes", None) or {}
    writer = pipes.get(0)
    if writer is not None and writer.connected and not writer._writeDisconnected and queued_bytes_of(writer) == 0:
        try:
            written = os.write(writer.fileno(), data)
        except OSError:
            written = 0
        data = data[written:]
        if not data:
            return
    transport.write(data)


def spawn_process(reactor: Any, protocol: ProcessProtocol, argv: list[str], env: dict[str, str],
                  path: str | None) -> Any:
    """``spawnProcess`` with the child started as a ``SCHED_BATCH`` task; returns its transport.

    A batch task that is woken (a line written to its stdin) does not preempt
    the task that woke it, so the worker goes on with what its reactor turn
    holds (other children's lines, the broker's frames) instead of giving up
    the core at every write; the child runs as soon as a core is free, as
    before. Measured on 2 cores with 20 warm children at saturation: the
    toolkit app 252 against 237 messages per second (5 runs each), the cores
    busier (87-94 % against 83-90 %); the reply-only app and cold children
    unchanged. The policy is inherited at fork, so the worker's thread takes it
    for the moment of the spawn and then returns to ``SCHED_OTHER``. A worker
    started under another policy (an operator's choice, e.g. ``chrt --idle``)
    keeps it, and its children inherit it. This is scheduling, not confinement:
    a child may switch itself back (Node cannot without a native addon).
    """
    try:
        batch = os.sched_getscheduler(0) == os.SCHED_OTHER
        if batch:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        batch = False  # a container's seccomp policy may refuse it: children then start as the worker runs
    try:
        return IReactorProcess(reactor).spawnProcess(protocol, argv[0], argv, env=env, path=path)
    finally:
        if batch:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@dataclass
class SandboxResult:
    """How a sandbox run ended."""

    #: the child's exit status, or None when it died of a signal or is still alive (warm)
    exit_code: int | None
    #: the signal that ended it, or None
    signal: int | None
    #: why the worker ended it ("timeout", "recv_limit", "unknown command", ...), or None
    kill_reason: str | None
    #: True when the app said it was done (e.g. ``js.done``) before it was stopped
    finished: bool
    #: seconds from the start of the run to its end
    duration: float
    #: True when the child ended (or was told to end) with this run; False when it was kept warm
    retired: bool = True

    @property
    def bystander(self) -> bool:
        """It was killed for another run's fault in the same child; its own message did nothing wrong."""
        return self.kill_reason is not None and self.kill_reason.startswith(ANOTHER_RUNS)

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


class SandboxRun:
    """One message's run inside a child: its API, timer, output count and pending requests."""

    def __init__(self, api: SandboxApi, started: float, run_id: int) -> None:
        self.api = api
        self.started = started
        #: its number in its child (1 for the first run); the ``run_id`` of its lines
        self.run_id = run_id
        self.received = 0
        self.requests = 0
        self.kill_reason: str | None = None
        self.finished = False
        self.pending: set[Deferred[Any]] = set()
        self.timer: Any = None
        self.result: Deferred[SandboxResult] = Deferred()
        self.ending = False
        #: problems reported once per run, by kind, with how often each happened
        self.reported: Counter[str] = Counter()
        #: what was done with the problems of a kind ("ignored" unless said otherwise)
        self.fates: dict[str, str] = {}

    def report_once(self, kind: str, message: str, level: int = logging.WARNING, fate: str = "ignored") -> None:
        """Report the first problem of a kind; later ones are only counted (a flood is one line)."""
        if not self.reported[kind]:
            self.api.report(message, level)
            self.fates[kind] = fate
        self.reported[kind] += 1

    def report_counts(self) -> None:
        """Say how many more problems of each kind were ignored (or repaired) after the first was reported."""
        for kind, count in self.reported.items():
            if count > 1:
                self.api.report(f"{count - 1} more {kind} {self.fates.get(kind, 'ignored')} in this run",
                                logging.WARNING)


class SandboxChild(ProcessProtocol):
    """One sandboxed child process: spawns it, runs messages in it, reads its requests, enforces limits.

    :param argv: the whole command (``prlimit ... -- program args``), see :func:`rlimit_argv`.
    :param env: its whole environment (nothing is inherited from the worker).
    :param path: its working directory, or None for the worker's.
    :param recv_limit: bytes of stdout plus stderr one run may write before the child is killed.
    :param max_runs: runs the child may serve before it is retired (1: a cold child).
    :param max_requests: requests one run may make before the child is killed.
    :param max_pending: requests one run may have in flight at once; more get an error reply.
    :param stdin_limit: bytes of replies that may wait on the child's stdin, unread, before it is killed.
    :param runs_at_once: runs the child may serve at the same time; above 1 every line carries a ``run_id``.
    """

    def __init__(self, argv: list[str], env: dict[str, str], path: str | None, recv_limit: int,
                 max_runs: int = 1, max_requests: int = 10000, max_pending: int = 100,
                 stdin_limit: int = 8 * 1024 * 1024, reactor: Any = None, runs_at_once: int = 1) -> None:
        reactor = default_reactor(reactor)
        self.reactor = reactor
        self.argv = argv
        self.env = env
        self.path = path
        self.recv_limit = recv_limit
        self.max_runs = max_runs
        self.max_requests = max_requests
        self.max_pending = max_pending
        self.stdin_limit = stdin_limit
        self.runs_at_once = runs_at_once
        #: bytes of the worker's own commands (initialize, the messages) sent since the child's stdin queue
        #: was last empty: they may still wait in it, and never count against stdin_limit
        self._own_sent = 0
        self.runs_started = 0
        #: the runs being served, oldest first, by run_id
        self.runs: dict[int, SandboxRun] = {}
        #: the run a line marked ``fatal`` named: the child said it is ending because of that run
        self.culprit: SandboxRun | None = None
        #: the API of the run that started the child (resources initialised it for this tenant)
        self.first_api: SandboxApi | None = None
        self.retiring = False
        #: The child ignores a reply that arrives after its run ended (the JS runner does). Such a
        #: child is not retired for requests still pending at the end of a run: they finish before
        #: the run counts as ended, so their replies are written before the next run's message.
        self.takes_late_replies = False
        self.ended = False
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self._prestart_received = 0
        self._out = bytearray()
        self._err = bytearray()
        self._end_waiters: list[Deferred[None]] = []

    def spawn(self) -> None:
        """Start the child under its limits."""
        spawn_process(self.reactor, self, self.argv, self.env, self.path)

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    @property
    def run(self) -> SandboxRun | None:
        """The oldest run being served, or None."""
        return next(iter(self.runs.values()), None)

    @property
    def reusable(self) -> bool:
        """The child may serve another run."""
        return not (self.ended or self.retiring) and self.runs_started < self.max_runs

    @property
    def has_room(self) -> bool:
        """The child may start another run now, beside the ones it is serving."""
        return self.reusable and len(self.runs) < self.runs_at_once

    # --- runs -------------------------------------------------------------------

    def start_run(self, api: SandboxApi, timeout: float) -> Deferred[SandboxResult]:
        """Begin a run for ``api``; the Deferred fires with its :class:`SandboxResult`."""
        if len(self.runs) >= self.runs_at_once:
            raise RuntimeError(f"a sandbox child serves at most {self.runs_at_once} run(s) at a time")
        self.runs_started += 1
        if self.first_api is None:
            self.first_api = api
        run = SandboxRun(api, time.monotonic(), self.runs_started)
        self.runs[run.run_id] = run
        api.set_sandbox(self, run)
        if self.ended:
            # The child died before this run began (e.g. it could not be executed).
            self._end_run(run)
        else:
            run.timer = IReactorTime(self.reactor).callLater(timeout, self.kill, "timeout", run)
        return run.result

    def send(self, command: Command, run: SandboxRun | None = None) -> bool:
        """Write one command to the child (for ``run``, if given); False (and dropped) if the child has gone."""
        if self.ended or self.transport is None:
            return False
        if run is not None and self.runs_at_once > 1:
            command = {**command, "run_id": run.run_id}
        data = encode(command)
        queued = queued_bytes(self)
        if queued == 0:
            # Nothing sent before waits any more (runs side by side may leave no moment between runs).
            self._own_sent = 0
        if command.get("reply") is True:
            # A child that asks and never reads would make the worker hold every reply in memory.
            waiting = queued - self._own_sent
            if waiting + len(data) > self.stdin_limit:
                culprit = run or self.run
                if culprit is not None and culprit.kill_reason is None and not culprit.finished:
                    culprit.api.report(f"sandbox is not reading its replies: more than stdin_limit "
                                       f"({self.stdin_limit} bytes) would wait on its stdin; killing it",
                                       logging.ERROR)
                self.kill("stdin_limit", culprit)
                return False
        else:
            self._own_sent += len(data)
        write_now(self.transport, data)
        return True

    def kill(self, reason: str, run: SandboxRun | None = None) -> None:
        """Kill the child now; its runs fail with ``reason`` (the first reason wins).

        With ``run`` given the kill is that run's fault: the child's other runs
        fail with ``another run's <reason>``.
        """
        for each in self.runs.values():
            if each.kill_reason is None and not each.finished:
                each.kill_reason = reason if run is None or each is run else f"{ANOTHER_RUNS}{reason}"
        self.retire()

    def retire(self) -> None:
        """End the child (SIGKILL); it serves no further run."""
        self.retiring = True
        if not self.ended:
            # The transport forgets the pid once the child is reaped: the number may then be reused.
            pid = getattr(self.transport, "pid", None)
            try:
                if self.transport is not None:
                    self.transport.signalProcess("KILL")
            except (twisted_error.ProcessExitedAlready, AttributeError, OSError):
                pass
            try:
                # A jailed child leads its own process group (isolation.py starts bwrap under
                # setsid): bwrap killed while still building the jail leaves a process that
                # holds the pipes and would never end, so the whole group goes. Never the
                # worker's own group, which an unjailed child shares. Asked only after the
                # kill: a child still on its way to setsid could otherwise lead a group (and
                # start the jail in it) between the question and the kill.
                if pid is not None and os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def finish(self, run: SandboxRun | None = None) -> None:
        """The app said ``run`` (the oldest by default) is done: it counts as a success, and a warm
        child goes back to its pool once it serves no run."""
        run = run or self.run
        if run is None or run.ending or run.kill_reason is not None:
            return
        self._drain_stderr()
        if self.runs.get(run.run_id) is not run or run.ending or run.kill_reason is not None:
            return
        run.finished = True
        if self.runs_started >= self.max_runs and len(self.runs) == 1:
            self.retire()
        else:
            self._end_run(run)

    def _end_run(self, run: SandboxRun) -> None:
        if run.ending:
            return
        run.ending = True
        if run.timer is not None and run.timer.active():
            run.timer.cancel()
        if run.pending and not self.ended and not self.takes_late_replies:
            # A warm child must not carry a request from this run into the next one.
            self.retire()

        def fire(_: Any) -> None:
            if self.runs.get(run.run_id) is run:
                del self.runs[run.run_id]
            run.report_counts()
            run.api.report_dropped_log_lines()
            retired = self.ended or self.retiring
            run.result.callback(SandboxResult(
                self.exit_code if self.ended else None, self.signal if self.ended else None,
                run.kill_reason, run.finished, time.monotonic() - run.started, retired))

        # Handlers still running (an outbound publish, an HTTP call) finish before the run
        # counts as ended, so nothing the app asked for is lost when its delivery is acked.
        if run.pending:
            DeferredList(list(run.pending), consumeErrors=True).addCallback(fire)
        else:
            fire(None)

    # --- reading from the child -----------------------------------------------

    def _drain_stderr(self) -> None:
        """Read what the child wrote to stderr before it said it was done.

        It is already in the pipe, but the reactor reads a pipe a few KiB at a
        time and may reach the done line on stdout first: the rest of the run's
        stderr would then arrive after the run (and a cold child's retirement)
        and be lost.
        """
        pipes = getattr(self.transport, "pipes", None) or {}
        reader = pipes.get(2)
        if reader is None:
            return
        while not (self.ended or self.retiring):
            try:
                data = os.read(reader.fileno(), 65536)
            except OSError:
                # EAGAIN: nothing more is waiting (the pipe is non-blocking); any other
                # error is the reactor's to see on its own read.
                return
            if not data:
                return
            self.errReceived(data)

    def _count(self, data: bytes) -> bool:
        # Output cannot be told apart by run before it is split into lines: it counts against
        # every run the child is serving.
        active = [run for run in self.runs.values() if not run.ending]
        run = active[0] if active else self.run
        if run is None and self.first_api is None:
            # A pre-started child that has not served yet (e.g. a runtime's start-up warning):
            # tolerated up to recv_limit, and nothing it says reaches any tenant.
            self._prestart_received += len(data)
            if self._prestart_received > self.recv_limit:
                self.retire()
                return False
            return True
        if run is None or run.ending:
            # Output while no run is active cannot belong to any message: the child is misbehaving.
            api = run.api if run is not None else self.first_api
            if api is not None and not self.retiring:
                api.report("sandbox wrote output after its run was done; retiring it", logging.WARNING)
            self.retire()
            return False
        for each in active:
            each.received += len(data)
        # The oldest run has seen the most.
        if run.received > self.recv_limit:
            if run.kill_reason is None and not run.finished:
                run.api.report(f"sandbox wrote more than recv_limit ({self.recv_limit} bytes) "
                               "to stdout and stderr; killing it", logging.ERROR)
            self.kill("recv_limit", run)
            return False
        return True

    def outReceived(self, data: bytes) -> None:
        run = self.run
        # A cold child told to end after done may still say something: read it to report it.
        if self.ended or (self.retiring and not (run is not None and run.finished)) or not self._count(data):
            return
        self._out += data
        for line in self._lines(self._out):
            self._line_received(line)

    def errReceived(self, data: bytes) -> None:
        if self.ended or self.retiring or not self._count(data):
            return
        self._err += data
        run = self.run
        if run is not None and run.api.log_lines >= run.api.config.max_log_lines_per_run:
            # Over the cap, count the lines without splitting them: a flood of 2-byte lines
            # would otherwise cost the reactor a Python call per line.
            end = self._err.rfind(b"\n")
            if end >= 0:
                run.api.take_log_lines(self._err.count(b"\n", 0, end + 1))
                del self._err[:end + 1]
            return
        for line in self._lines(self._err):
            text = line.decode("utf-8", "replace").rstrip("\r")
            if text and run is not None and run.api.take_log_lines():
                run.api.log(text, logging.ERROR)

    @staticmethod
    def _lines(buffer: bytearray) -> list[bytes]:
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[:end + 1]
        return lines

    def _line_received(self, line: bytes) -> None:
        run = self.run
        if run is None or not line.strip():
            return
        if self.runs_at_once == 1 and not self._still_asking(run):
            return
        repaired: list[str] = []
        try:
            command = decode(line, repaired)
        except ProtocolError as e:
            shown = line[:200].decode("utf-8", "replace")
            run.report_once("invalid lines", f"sandbox sent an invalid line, ignored: {e}: {shown!r}")
            return
        if self.runs_at_once > 1:
            named = self._run_named(command, run)
            if named is None or not self._still_asking(named):
                return
            run = named
        if command.pop("fatal", None) is True and not run.finished:
            self.culprit = run
        api = run.api
        if repaired:
            # JavaScript strings may hold half a character (a lone surrogate); UTF-8 cannot.
            fields = ", ".join(sorted(repaired)[:5])[:200]
            run.report_once("lines with lone surrogates",
                            f"sandbox sent text with lone UTF-16 surrogates (half a character) in "
                            f"{command['cmd']!r} fields {fields}; replaced with U+FFFD", fate="repaired")
        if command["reply"]:
            run.report_once("replies to commands never sent",
                            f"sandbox sent a reply to a command it was never sent, ignored: "
                            f"{command['cmd']!r} cmd_id {command['cmd_id']!r}")
            return
        run.requests += 1
        if run.requests > self.max_requests:
            api.report(f"sandbox made more than max_requests_per_run ({self.max_requests}) requests; "
                       "killing it", logging.ERROR)
            self.kill("too many requests", run)
            return
        if len(run.pending) >= self.max_pending:
            api.sandbox_send(make_error_reply(
                command, f"too many requests in flight: at most {self.max_pending} "
                         "(max_pending_requests) may wait for replies at once"))
            return
        d = api.dispatch_request(command)
        run.pending.add(d)
        d.addBoth(self._request_done, run, d)

    def _still_asking(self, run: SandboxRun) -> bool:
        """Whether a request of ``run`` may still be carried out (it is reported once when not)."""
        if run.ending or (self.retiring and not run.finished):
            return False
        if run.finished:
            run.report_once("requests after done", "sandbox sent requests after it said it was done; "
                            "they were not carried out")
            return False
        return True

    def _run_named(self, command: Command, oldest: SandboxRun) -> SandboxRun | None:
        """The run a line of a child serving several at once names in its ``run_id`` (which is taken out)."""
        run_id = command.pop("run_id", None)
        run = self.runs.get(run_id) if type(run_id) is int else None
        if run is None:
            shown = repr(run_id)[:40]
            oldest.report_once("lines of no run", f"sandbox sent {command['cmd']!r} with run_id {shown}, "
                               "not a run it is serving; ignored")
        return run

    def _request_done(self, result: Any, run: SandboxRun, d: Deferred[Any]) -> Any:
        run.pending.discard(d)
        if isinstance(result, Failure):
            log.error("sandbox %s: request dispatch failed: %s", run.api.sandbox_id, result.getTraceback())
        return None

    # --- the end --------------------------------------------------------------

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        value = reason.value
        self.exit_code = getattr(value, "exitCode", None)
        self.signal = getattr(value, "signal", None)
        if self.culprit is not None and self.culprit.run_id in self.runs:
            # The child named the run it ended for: the others did nothing wrong.
            for run in self.runs.values():
                if run is not self.culprit and run.kill_reason is None and not run.finished:
                    run.kill_reason = f"{ANOTHER_RUNS}fatal error"
        for run in list(self.runs.values()):
            self._end_run(run)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(None)

    def wait_ended(self) -> Deferred[None]:
        """A Deferred fired once the child process has ended."""
        if self.ended:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        return d
