"""The worker's live sandbox children: warm ones kept per tenant and code, pre-started spares, and a bound.

A warm child only ever serves one key: the tenant (``sandbox_id``) and the
version of its code, so no process is ever shared between tenants (the seed
cached children by message type alone). The child of a key released last
serves its next message, so after a burst the extra children go idle and
are reaped after ``idle_timeout`` seconds. The number of live children never
exceeds ``max_children``; with ``prefork`` > 0 that many blank children are started
before they are needed, so a message does not wait for a process to start.
A spare taken while others still wait is replaced when a run ends, not
beside the run it serves: on a small machine the replacement's start would
take the CPU that run needs. Taking the last spare replaces it at once.

A child that may serve several runs at once (``runs_per_child``) is given
another run of its key while it has room, before an idle or new child is:
the fewer processes take turns on the cores, the less each message costs.
It counts as busy until its last run ends. Such a child may never be idle
under steady load, so its CPU time is also read when one of its runs ends
while others go on: one that has used half of ``RLIMIT_CPU`` is given no
further run and retired when its last one ends.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from .process import SandboxChild, SandboxResult

log = logging.getLogger("vxsandbox.pool")


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) a live process has used, or 0 when it cannot be read."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); after the ")" they are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ChildPool:
    """Hands out children for runs and takes them back.

    :param spawn: builds and spawns a new child (``spawn(api)``); ``api`` is
        the run's, or None for a pre-started spare.
    :param max_children: live children at most (busy, idle and spare).
    :param idle_timeout: seconds an idle warm child is kept.
    :param prefork: blank children kept started ahead of need.
    :param cpu_limit: the children's RLIMIT_CPU soft limit in seconds (or None); a warm
        child that has used half of it is retired rather than killed mid-run by the kernel.
    """

    def __init__(self, spawn: Callable[[Any], SandboxChild], max_children: int, idle_timeout: float,
                 prefork: int, cpu_limit: float | None, reactor: Any) -> None:
        self.spawn = spawn
        self.max_children = max_children
        self.idle_timeout = idle_timeout
        self.prefork = prefork
        self.cpu_limit = cpu_limit
        self.reactor = reactor
        #: children serving runs, each with its key
        self.busy: dict[SandboxChild, Hashable] = {}
        #: busy children given no further run, retired when their last run ends (CPU worn)
        self.draining: set[SandboxChild] = set()
        #: idle children, least recently used first, each with its key and reaping timer
        self.idle: OrderedDict[SandboxChild, tuple[Hashable, Any]] = OrderedDict()
        self.spares: list[SandboxChild] = []
        self._waiting: list[Deferred[None]] = []
        #: every child spawned and not yet ended, retiring ones included
        self.alive: set[SandboxChild] = set()
        self.spawned = 0
        self.reused = 0
        #: when each child's CPU time was last read (reading /proc costs more than the rest of a release)
        self._cpu_checked: dict[SandboxChild, float] = {}

    @property
    def live(self) -> int:
        """Children alive or starting: busy, idle and spare."""
        return len(self.busy) + len(self.idle) + len(self.spares)

    async def acquire(self, key: Hashable, api: Any, spare_ok: bool) -> tuple[SandboxChild, bool]:
        """A child for a run of ``key``: an idle warm one, else a spare, else a new one.

        Returns ``(child, fresh)``; a fresh child has not been initialised for any tenant yet.
        Waits when ``max_children`` are all busy.
        """
        while True:
            # A busy child with room for another run first, the one taken most recently.
            for child, child_key in reversed(self.busy.items()):
                if child_key == key and child.has_room and child not in self.draining:
                    self.busy[child] = self.busy.pop(child)
                    self.reused += 1
                    return child, False
            # Then the most recently released child: its caches are warm, and the others
            # of a burst stay idle long enough to be reaped (eviction below takes the oldest).
            for child, (child_key, _timer) in reversed(self.idle.items()):
                if child_key == key:
                    self._take_idle(child)
                    self.busy[child] = key
                    self.reused += 1
                    return child, False
            if spare_ok and self.spares:
                child = self.spares.pop(0)
                self.busy[child] = key
                if not self.spares:
                    # Otherwise the next release tops up, after this run rather than beside it.
                    self._top_up()
                return child, True
            if self.live >= self.max_children:
                if self.idle:
                    self._take_idle(next(iter(self.idle))).retire()
                elif self.spares:
                    self.spares.pop().retire()
                else:
                    waiter: Deferred[None] = Deferred()
                    self._waiting.append(waiter)
                    await waiter
                    continue
            child = self._spawn(api)
            self.busy[child] = key
            self._top_up()
            return child, True

    def release(self, child: SandboxChild, key: Hashable, result: SandboxResult | None) -> None:
        """Take a child back after a run: keep it warm, or retire it (always when ``result`` is None).

        A child still serving other runs stays busy, and a waiter is woken to look for its room.
        """
        if result is not None and child.runs:
            if child not in self.draining and self._cpu_worn(child):
                self.draining.add(child)
            if self._waiting:
                self._waiting.pop(0).callback(None)
            return
        self.busy.pop(child, None)
        draining = child in self.draining
        self.draining.discard(child)
        if (result is not None and not result.retired and child.reusable and not draining
                and not self._cpu_worn(child)):
            timer = self.reactor.callLater(self.idle_timeout, self._reap, child)
            self.idle[child] = (key, timer)
        else:
            child.retire()
        self._wake()
        self._top_up()

    def kill_all(self, reason: str) -> Deferred[Any]:
        """Retire every child, busy or not (their runs end killed for ``reason``); fires once all have ended."""
        for child in list(self.idle):
            self._take_idle(child).retire()
        for child in self.spares:
            child.retire()
        self.spares.clear()
        for child in list(self.busy):
            child.kill(reason)
        return DeferredList([child.wait_ended() for child in self.alive], consumeErrors=True)

    def stop_prefork(self) -> None:
        """Start no more spares (the worker is stopping)."""
        self.prefork = 0

    # --- internals ------------------------------------------------------------------

    def _spawn(self, api: Any) -> SandboxChild:
        child = self.spawn(api)
        self.spawned += 1
        self.alive.add(child)
        child.wait_ended().addCallback(lambda _: self._ended(child))
        return child

    def _take_idle(self, child: SandboxChild) -> SandboxChild:
        key, timer = self.idle.pop(child)
        if timer.active():
            timer.cancel()
        return child

    def _reap(self, child: SandboxChild) -> None:
        if child in self.idle:
            self.idle.pop(child)
            child.retire()
            self._wake()

    def _ended(self, child: SandboxChild) -> None:
        # A child may die while idle or spare (a crash, an outside SIGKILL): forget it.
        self.alive.discard(child)
        self.draining.discard(child)
        self._cpu_checked.pop(child, None)
        if child in self.idle:
            self._take_idle(child)
        if child in self.spares:
            self.spares.remove(child)
        self._wake()
        self._top_up()

    def _wake(self) -> None:
        # A waiter can proceed when there is room, or an idle or spare child it may evict.
        if self._waiting and (self.live < self.max_children or self.idle or self.spares):
            self._waiting.pop(0).callback(None)

    def _top_up(self) -> None:
        while len(self.spares) < self.prefork and self.live < self.max_children:
            self.spares.append(self._spawn(None))

    def _cpu_worn(self, child: SandboxChild) -> bool:
        if self.cpu_limit is None:
            return False
        # Between two reads a child on two cores can use at most a quarter of the limit, so
        # reading every eighth of it (in wall time) still retires it well before the kernel
        # kills it at the full limit.
        now = self.reactor.seconds()
        if now - self._cpu_checked.get(child, -self.cpu_limit) < self.cpu_limit / 8:
            return False
        self._cpu_checked[child] = now
        return cpu_seconds(child.pid) > self.cpu_limit / 2


