"""Startup snapshots: children that start with the app's preloaded modules already loaded (``snapshot``, on by default).

Requiring a toolkit such as vumigo_v02 means running the top-level code of
some sixty modules, about 45 ms of CPU at every cold start; a code cache
does not skip that, a V8 startup snapshot does. The worker has node build
one (``node --build-snapshot runner.js --preload=...``) in the children's own
jail and with their flags, from the worker's config alone, before any tenant
is known: the runner loads the ``preload`` modules and nothing else runs.
Node 20 writes the blob to the builder's stdout, so the jail needs nothing
writable; the worker stores it in a folder of its own that children may only
read, and children then start with ``--snapshot-blob``. Until a snapshot is
ready, or when one cannot be made (a package with an ``exports`` map, ES
modules or a native addon; a build that fails), children start from
``runner.js`` as before.

A snapshot is used only while it is what was made: the blob's file is
unchanged since it was checked (a started child from it answered), and so is
every module file it loaded. Anything else (an edited package, a blob
overwritten or cut short) and it is deleted and made again, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from vxsandbox_core.isolation import wrap_command
from vxsandbox_core.process import spawn_process
from vxsandbox_core.rlimits import rlimit_argv

from .node import runner_path
from .reads import SETTLED_NS, FileState, file_state

log = logging.getLogger("vxsandbox.worker")

#: the line the runner writes to stderr after loading a snapshot's modules, then their file names as JSON
FILES_MARKER = b"vxsandbox-snapshot-files "
#: what the runner writes to stderr, then the reason, when it cannot load a snapshot's modules
ERROR_MARKER = "vxsandbox-snapshot-error "
#: how long a build or the check of its blob may take, in seconds
BUILD_TIMEOUT = 60.0
#: how often, at most, a snapshot's files are checked again (seconds)
CHECK_INTERVAL = 1.0
#: the largest blob kept: a child's heap is bounded far below this (max_old_space_size, RLIMIT_DATA)
MAX_BLOB = 256 * 1024 * 1024
#: what of a builder's stderr is kept for the report of a failure
STDERR_KEPT = 16 * 1024
#: the most snapshots a worker keeps, one per shape (a worker whose config varies per message could
#: otherwise fill the disk with them); past it, the one handed out longest ago is dropped
MAX_KEPT = 8
#: how long a dropped snapshot's file stays (seconds): a child handed its path may not have opened it yet
DROPPED_GRACE = BUILD_TIMEOUT

@dataclass
class Snapshot:
    """A blob that was made, checked and stored, with what it depends on."""

    path: str
    #: the blob file's state when it was checked
    state: FileState
    #: each module file it loaded, with its state when the snapshot was made
    files: list[tuple[str, FileState]] = field(default_factory=list)
    checked: float = 0.0

    def still_good(self, now: float) -> bool:
        if now - self.checked < CHECK_INTERVAL:
            return True
        good = file_state(self.path) == self.state and all(file_state(f) == s for f, s in self.files)
        if good:
            self.checked = now
        return good


class Collector(ProcessProtocol):
    """Writes a process's stdout to a file, keeps the end of its stderr, fires with its exit code."""

    def __init__(self, out: Any, stdin: bytes = b"") -> None:
        self.out = out
        self.stdin = stdin
        self.err = b""
        #: bytes of stdout written to ``out``; -1 once it passed MAX_BLOB (the process is then killed)
        self.written = 0
        self.too_big = False
        self.code: int | None = None
        self._waiters: list[Deferred[int]] = []

    def wait(self) -> Deferred[int]:
        """Fires with the exit code (-1 for a signal) once the process has ended."""
        if self.code is not None:
            return succeed(self.code)
        d: Deferred[int] = Deferred()
        self._waiters.append(d)
        return d

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if self.out is None or self.written < 0:
            return
        self.written += len(data)
        if self.written > MAX_BLOB:
            # A package that makes its heap huge must not fill the worker's disk.
            self.written = -1
            self.too_big = True
            if self.transport is not None:
                self.transport.signalProcess("KILL")
            return
        self.out.write(data)

    def errReceived(self, data: bytes) -> None:
        self.err = (self.err + data)[-STDERR_KEPT:]

    def processEnded(self, reason: Failure) -> None:
        code = 0 if isinstance(reason.value, ProcessDone) else getattr(reason.value, "exitCode", None)
        self.code = -1 if code is None else code
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.code)


class SnapshotStore:
    """The worker's snapshots, one per version of what a child loads: made in the background, checked, kept.

    :param worker: the JS worker (its executable, rlimits, reactor, config and read paths).
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.directory = tempfile.mkdtemp(prefix="vxsandbox-snapshots-")
        # Children (other uids) read the blobs; only the worker writes here.
        os.chmod(self.directory, 0o755)
        #: made and checked, the one handed out longest ago first
        self.ready: OrderedDict[str, Snapshot] = OrderedDict()
        self.building: dict[str, Deferred[Snapshot | None]] = {}
        #: keys whose build failed: not tried again while the worker runs
        self.failed: set[str] = set()
        self._waiters: dict[str, list[Deferred[Snapshot | None]]] = {}
        #: builders and checks still running, killed when the worker stops
        self._running: set[Collector] = set()
        #: deletions of dropped snapshots' files, waiting out DROPPED_GRACE
        self._deletions: set[Any] = set()
        self.closed = False
        self._last_key: tuple[tuple[Any, ...], str] | None = None

    def key(self, api: Any, flags: list[str], preload: str) -> str:
        """What shapes a snapshot: node, its flags, the runner, the preload list and the environment."""
        config = api.config
        shape = (self.worker.executable, str(self.worker.node_version), flags, preload,
                 file_state(runner_path()), sorted(config.env.items()), config.path)
        # Asked for every child and every warm message's key: hashed once per shape, not per call.
        if self._last_key is None or self._last_key[0] != shape:
            self._last_key = (shape, hashlib.sha256(repr(shape).encode("utf-8")).hexdigest())
        return self._last_key[1]

    def blob(self, api: Any, flags: list[str], preload: str) -> str | None:
        """The blob to start a child from, or None (and a build is started) when none is ready."""
        key = self.key(api, flags, preload)
        snapshot = self.ready.get(key)
        if snapshot is not None:
            if snapshot.still_good(time.monotonic()):
                self.ready.move_to_end(key)
                return snapshot.path
            log.warning("startup snapshot %s is stale (a module it loaded or its file changed): made again",
                        snapshot.path)
            self.discard(key)
        if key not in self.building and key not in self.failed and not self.closed:
            building = Deferred.fromCoroutine(self._build(key, api, flags, preload))
            if not building.called:
                self.building[key] = building
            building.addErrback(self._crashed, key)
        return None

    def _crashed(self, failure: Failure, key: str) -> None:
        self.failed.add(key)
        log.error("startup snapshot could not be made, children start without it: %s",
                  failure.getTraceback())

    def wait(self, api: Any, flags: list[str], preload: str) -> Deferred[Snapshot | None]:
        """Fires with the snapshot for this shape once made (None if it cannot be); starts the build if needed."""
        key = self.key(api, flags, preload)
        self.blob(api, flags, preload)
        if key not in self.building:
            return succeed(self.ready.get(key))
        waiter: Deferred[Snapshot | None] = Deferred()
        self._waiters.setdefault(key, []).append(waiter)
        return waiter

    def discard(self, key: str) -> None:
        snapshot = self.ready.pop(key, None)
        if snapshot is not None:
            try:
                os.unlink(snapshot.path)
            except OSError:
                pass

    def _drop(self, key: str) -> None:
        """Forget a snapshot that is not stale, and delete its file once no child can be about to open it."""
        path = self.ready.pop(key).path
        log.info("startup snapshot %s dropped: %d kept at most, this one used longest ago", path, MAX_KEPT)

        def delete() -> None:
            self._deletions.discard(deletion)
            if key in self.ready or key in self.building:
                return  # made again meanwhile, at the same path: that file is the new one
            try:
                os.unlink(path)
            except OSError:
                pass

        deletion = self.worker.reactor.callLater(DROPPED_GRACE, delete)
        self._deletions.add(deletion)

    async def close(self) -> None:
        """Stop any build, wait for it to end, and delete every blob (the worker is stopping)."""
        self.closed = True
        for deletion in self._deletions:
            deletion.cancel()
        self._deletions.clear()
        running = list(self._running)
        for collector in running:
            self._kill(collector)
        for collector in running:
            await collector.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _command(self, api: Any, node_args: list[str]) -> list[str]:
        argv = rlimit_argv(self.worker.rlimits) + [self.worker.executable, *node_args]
        return wrap_command(api.config, argv, [*self.worker.read_paths(api), self.directory])

    async def _run(self, api: Any, argv: list[str], out: Any, stdin: bytes = b"") -> Collector:
        collector = Collector(out, stdin)
        env = self.worker.node_env(api)
        process = spawn_process(self.worker.reactor, collector, argv, env, api.config.path)
        if out is not None:
            # node opens /dev/stdout by name to write the blob; the child runs as another uid, and a
            # pipe can be opened again through /proc only as its mode allows. Nothing else can reach
            # it: /proc/<pid>/fd is the child's own, and in the jail no other process is even seen.
            os.fchmod(process.pipes[1].fileno(), 0o622)
        self._running.add(collector)
        timer = self.worker.reactor.callLater(BUILD_TIMEOUT, self._kill, collector)
        try:
            await collector.wait()
        finally:
            self._running.discard(collector)
            if timer.active():
                timer.cancel()
        return collector

    @staticmethod
    def _kill(collector: Collector) -> None:
        try:
            if collector.transport is not None:
                collector.transport.signalProcess("KILL")
        except Exception:
            pass

    async def _build(self, key: str, api: Any, flags: list[str], preload: str) -> Snapshot | None:
        path = os.path.join(self.directory, key + ".blob")
        started = time.time_ns()
        made: Snapshot | None = None
        try:
            with open(path + ".part", "wb") as out:
                built = await self._run(api, self._command(api, [
                    *build_flags(flags), "--snapshot-blob", "/dev/stdout", "--build-snapshot", runner_path(),
                    preload]), out)
            if self.closed:
                return None
            problem = (f"the snapshot grew past {MAX_BLOB >> 20} MiB" if built.too_big
                       else self._problem(built, "building it"))
            files = _loaded_files(built.err) if problem is None else None
            if problem is None and files is None:
                problem = "the runner did not list the modules it loaded"
            if problem is None and files is not None:
                os.chmod(path + ".part", 0o644)
                os.replace(path + ".part", path)
                states = [(f, file_state(f)) for f in files]
                # A module written within the clock's granularity of the build could change unseen.
                if any(s is None or started - s[3] < SETTLED_NS for _, s in states):
                    log.info("startup snapshot not kept: a module it loaded changed in the last seconds")
                    os.unlink(path)
                    return None
                # A started child from it must answer, or the blob is not used.
                checked = await self._run(api, self._command(api, [*snapshot_flags(flags), "--snapshot-blob", path]),
                                          None, b'{"cmd": "exit"}\n')
                if self.closed:
                    return None
                problem = self._problem(checked, "starting a child from it")
            if problem is not None:
                self.failed.add(key)
                # What the operator asked for by name and cannot have is a warning; by default, a note.
                log.log(logging.WARNING if self.worker.config.snapshot else logging.INFO,
                        "startup snapshot for %s cannot be made, children start without it: %s",
                        self.worker.app_filename(api), problem)
                for leftover in (path, path + ".part"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)
                return None
            made = Snapshot(path, file_state(path), states, time.monotonic())
            self.ready[key] = made
            while len(self.ready) > MAX_KEPT:
                self._drop(next(iter(self.ready)))
            log.info("startup snapshot ready: %d modules, %.1f MiB, made in %.1f s", len(states),
                     os.path.getsize(path) / (1 << 20), (time.time_ns() - started) / 1e9)
            return made
        finally:
            self.building.pop(key, None)
            for waiter in self._waiters.pop(key, []):
                waiter.callback(made)

    @staticmethod
    def _problem(collector: Collector, doing: str) -> str | None:
        code = collector.code
        if code == 0:
            return None
        lines = [line for line in collector.err.decode("utf-8", "replace").splitlines()
                 if line.strip() and not line.startswith(FILES_MARKER.decode())]
        said = [line[len(ERROR_MARKER):] for line in lines if line.startswith(ERROR_MARKER)]
        return f"{doing} exited with {code}: " + (said[0] if said else " | ".join(lines[-6:]))[:1000]


def _loaded_files(stderr: bytes) -> list[str] | None:
    for line in stderr.splitlines():
        if line.startswith(FILES_MARKER):
            try:
                files = json.loads(line[len(FILES_MARKER):])
            except ValueError:
                return None
            if isinstance(files, list) and all(isinstance(f, str) for f in files):
                return files
    return None


#: V8 compiles every function when its enclosing code is compiled, not when first called: given to the
#: builder and the children of a snapshot whose children are one-message spares (see the JS worker)
EAGER_COMPILE = "--no-lazy"


def snapshot_flags(flags: list[str]) -> list[str]:
    """A child's flags when it starts from a snapshot: ``--disable-warning`` is not applied there, so
    ``--no-warnings`` keeps node's warnings (the permission model's "experimental") out of the app's log."""
    return [f for f in flags if not f.startswith("--disable-warning=")] + ["--no-warnings"]


def build_flags(flags: list[str]) -> list[str]:
    """The builder's flags: the children's V8 flags (a snapshot only starts under the V8 flags it was made
    with), without the permission model, which a snapshot made under it cannot set up again (Node 20)."""
    permission = ("--experimental-permission", "--permission", "--allow-fs-", "--allow-child-process",
                  "--allow-worker", "--allow-addons", "--allow-wasi", "--disable-warning=")
    return [f for f in flags if not f.startswith(permission)]
