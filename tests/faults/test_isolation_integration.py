"""The bwrap jail (vxsandbox_core.isolation): no network, nothing of the host to read, fork bombs stopped.

The first tests run :func:`wrap_command`'s argv directly, next to the same
command unwrapped as the control that shows each attack works without the
jail. The worker tests run ``isolation: bwrap`` end to end.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.js.helpers import js_config
from vxsandbox_core import hookimpl, isolation
from vxsandbox_core.config import SandboxConfig
from vxsandbox_core.isolation import (
    SANDBOX_UID_BASE,
    check_isolation,
    describe_isolation,
    effective_isolation,
    find_bwrap,
    isolation_warning,
    wrap_command,
)
from vxsandbox_core.rlimits import DEFAULT_MAX_PROCESSES, rlimit_argv
from vxsandbox_core.testing import (
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_worker_config,
)
from vxsandbox_core.worker import Sandbox
from vxsandbox_js import JsSandbox

from .harness import ATTACKER, FaultBench, RecordsHandler, node_path, vumi_message

BWRAP = {"isolation": "bwrap"}

#: a fork bomb that stops by itself at 300 processes, so that running it unjailed (when the jail
#: is missing) fails the test instead of the machine; each process lives 4 s
FORK_BOMB = textwrap.dedent("""
    import json, os, sys, time
    forks = 0
    for _ in range(300):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(4)
            os._exit(0)
        forks += 1
    request = {"cmd": "record.forks", "cmd_id": "1", "reply": False, "forks": forks}
    sys.stdout.write(json.dumps(request) + "\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    sys.stdin.readline()
""")


def jailed(argv: list[str]) -> bool:
    """Whether a child's command runs bwrap (started under setsid, so it leads its own process group)."""
    return [os.path.basename(a) for a in argv[:2]] == ["setsid", "bwrap"]


def run(argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={}, timeout=timeout, check=False)


def node_argv(script: str) -> list[str]:
    return rlimit_argv({}) + [node_path(), "-e", script]


class Listener(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected += 1  # type: ignore[attr-defined]
        self.transport.loseConnection()  # type: ignore[union-attr]


def listen() -> tuple[Any, Factory]:
    factory = Factory.forProtocol(Listener)
    factory.connected = 0  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    return port, factory


class ConfigTests(SynchronousTestCase):
    """The ``isolation`` value and what ``vxsandbox check`` says about it."""

    def test_values(self) -> None:
        """``auto``, ``none`` and ``bwrap`` are accepted; anything else names the choices."""
        self.assertEqual(check_isolation("auto"), "auto")
        self.assertEqual(check_isolation("none"), "none")
        self.assertEqual(check_isolation("bwrap"), "bwrap")
        with self.assertRaises(ValueError) as e:
            check_isolation("docker")
        self.assertIn("'auto', 'none', 'bwrap'", str(e.exception))

    def test_default_is_auto_and_jails_here(self) -> None:
        """A config without ``isolation`` is ``auto``, which is bwrap where bubblewrap works (as here)."""
        self.assertEqual(SandboxConfig({}).isolation, "auto")
        self.assertEqual(effective_isolation("auto"), "bwrap")
        self.assertIsNone(isolation_warning("auto"))
        argv = ["/usr/bin/prlimit", "--as=1:1", "--", "/bin/true"]
        self.assertTrue(jailed(wrap_command({}, argv, [])))

    def test_none_as_root_runs_child_as_own_uid(self) -> None:
        """Under ``none`` a root worker's child runs through setpriv as a uid of its own; others change nothing."""
        argv = ["/usr/bin/prlimit", "--as=1:1", "--", "/bin/true"]
        self.patch(isolation.os, "geteuid", lambda: 0)
        wrapped = wrap_command({"isolation": "none"}, argv, [])
        self.assertEqual(os.path.basename(wrapped[0]), "setpriv")
        uid = next(int(a.split("=")[1]) for a in wrapped if a.startswith("--reuid="))
        self.assertGreaterEqual(uid, SANDBOX_UID_BASE)
        self.assertIn("--no-new-privs", wrapped)
        self.assertEqual(wrapped[wrapped.index("--") + 1:], argv)
        self.patch(isolation.os, "geteuid", lambda: 1000)
        self.assertEqual(wrap_command({"isolation": "none"}, argv, []), argv)

    def test_describe(self) -> None:
        """The check line names the active isolation, what it leaves open, and whether bwrap is available."""
        self.assertIn("isolation: bwrap", describe_isolation("bwrap"))
        self.assertIn("isolation: auto -> bwrap", describe_isolation("auto"))
        self.assertIn("bwrap available at", describe_isolation("none"))
        self.assertIn("can reach the network", describe_isolation("none"))

    def test_program_under_symlinked_bin_does_not_bind_root(self) -> None:
        """``/bin/sh`` on a merged-/usr system binds its real prefix, never the host's ``/``."""
        wrapped = wrap_command(BWRAP, rlimit_argv({}) + ["/bin/sh", "-c", "true"], [])
        binds = [wrapped[i + 1] for i, a in enumerate(wrapped) if a in ("--ro-bind", "--bind")]
        self.assertNotIn("/", binds)
        self.assertTrue(all(os.path.realpath(b) != "/" for b in binds), binds)


class AutoFallbackTests(TestCase):
    """``isolation: auto`` where bubblewrap is installed but cannot build its jail."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        fake = os.path.join(os.path.abspath(directory), "bwrap")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        os.chmod(fake, 0o755)
        self.fake = fake
        self.patch(isolation, "find_bwrap", lambda: fake)

    def test_falls_back_with_warning(self) -> None:
        """The probe fails, so children run unjailed, and the warning says why and what is then open."""
        self.assertEqual(effective_isolation("auto"), "none")
        warning = isolation_warning("auto")
        assert warning is not None
        self.assertIn("No permissions to create new namespace", warning)
        self.assertIn("can reach the network", warning)
        self.assertIn(self.fake, warning)
        argv = ["/usr/bin/prlimit", "--as=1:1", "--", "/bin/true"]
        self.assertNotIn(self.fake, wrap_command({}, argv, []))
        with self.assertRaises(ValueError) as e:
            check_isolation("bwrap")
        self.assertIn("No permissions to create new namespace", str(e.exception))

    def test_check_prints_warning(self) -> None:
        """``vxsandbox check`` prints the WARNING line for a config that leaves isolation to auto."""
        from vxsandbox_core.cli import main
        config = os.path.abspath(self.mktemp())
        # A program every user may run: this venv's python lives under /root, which a root worker's
        # unjailed children cannot enter, and check reports that as an error of its own.
        with open(config, "w") as f:
            json.dump({"worker": "sandbox", "transport_name": "t", "executable": "/bin/true"}, f)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["check", "-c", config]), 0)
        self.assertIn("WARNING: isolation: auto cannot use bubblewrap", out.getvalue())
        self.assertIn("can reach the network", out.getvalue())

    async def test_worker_warns_at_startup(self) -> None:
        """A worker left on ``auto`` logs the WARNING when it starts, and its children still answer."""
        records = RecordsHandler()
        logging.getLogger("vxsandbox").addHandler(records)
        self.addCleanup(logging.getLogger("vxsandbox").removeHandler, records)
        # A JS child, because node is readable by the unprivileged uid a root worker's child runs as
        # (this venv's python lives under /root, which is not).
        broker = RecordingBroker()
        app = ("api.on_inbound_message = function (c) { var self = this; self.request('outbound.reply_to',"
               " {in_reply_to: c.msg.message_id, content: 'unjailed', continue_session: false},"
               " function () { self.done(); }); };")
        worker = JsSandbox(js_config(app, sandbox={"outbound": {"cls": "outbound"}}), broker=broker,
                           hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)
        warnings = [r.getMessage() for r in records.records if r.levelno == logging.WARNING]
        self.assertTrue(any("isolation: auto cannot use bubblewrap" in w and "can reach the network" in w
                            for w in warnings), warnings)
        self.assertEqual(await worker.process_message(make_user_message()), "ok")
        self.assertEqual([m["content"] for m in broker.messages()], ["unjailed"])

    def test_configured_nproc_is_kept(self) -> None:
        """An ``RLIMIT_NPROC`` from the config replaces the jail's default process limit."""
        argv = rlimit_argv({}) + ["/bin/true"]
        self.assertIn(f"--nproc={DEFAULT_MAX_PROCESSES}:{DEFAULT_MAX_PROCESSES}", wrap_command(BWRAP, argv, []))
        own = ["/usr/bin/prlimit", "--nproc=10:10", "--", "/bin/true"]
        wrapped = wrap_command({"isolation": "bwrap", "rlimits": {"RLIMIT_NPROC": 10}}, own, [])
        self.assertEqual([a for a in wrapped if a.startswith("--nproc")], ["--nproc=10:10"])


@pytest.mark.node
class JailTests(TestCase):
    """The wrapped command against the same command unwrapped."""

    timeout = 60

    def setUp(self) -> None:
        assert find_bwrap() is not None, "bubblewrap is not installed (apt-get install bubblewrap)"

    async def test_no_tcp_to_the_host(self) -> None:
        """Node inside the jail cannot reach a listener on 127.0.0.1 that node outside it reaches."""
        port, factory = listen()
        self.addCleanup(port.stopListening)
        script = (f"require('net').connect({port.getHost().port}, '127.0.0.1')"
                  ".on('connect', () => { console.log('connected'); process.exit(0); })"
                  ".on('error', (e) => { console.log(e.code); process.exit(0); });")
        argv = node_argv(script)
        outside = await _in_thread(run, argv)
        inside = await _in_thread(run, wrap_command(BWRAP, argv, []))
        self.assertEqual(outside.stdout.strip(), "connected")
        self.assertEqual(inside.stdout.strip(), "ECONNREFUSED", inside.stderr)
        self.assertEqual(factory.connected, 1)  # type: ignore[attr-defined]

    def test_reads_only_what_it_needs(self) -> None:
        """The jail shows the app's own directory but no other file of the host."""
        app_dir, secret_dir = self.mktemp(), self.mktemp()
        os.makedirs(app_dir)
        os.makedirs(secret_dir)
        for directory, text in ((app_dir, "mine"), (secret_dir, "secret")):
            with open(os.path.join(directory, "data.txt"), "w") as f:
                f.write(text)
        script = ("const fs = require('fs'); for (const p of process.argv.slice(1)) {"
                  " try { console.log(fs.readFileSync(p, 'utf8')); } catch (e) { console.log(e.code); } }")
        paths = [os.path.abspath(os.path.join(d, "data.txt")) for d in (app_dir, secret_dir)] + ["/etc/hostname"]
        argv = node_argv(script) + paths
        outside = run(argv)
        inside = run(wrap_command(BWRAP, argv, [os.path.abspath(app_dir)]))
        self.assertEqual(outside.stdout.split(), ["mine", "secret", open("/etc/hostname").read().strip()])
        self.assertEqual(inside.stdout.split(), ["mine", "ENOENT", "ENOENT"], inside.stderr)

    def test_shell_from_symlinked_bin_reads_nothing_of_the_host(self) -> None:
        """``/bin/sh`` (``/bin -> usr/bin``) in the jail reads neither /etc/hostname nor a file outside its binds."""
        secret_dir = os.path.abspath(self.mktemp())
        os.makedirs(secret_dir)
        secret = os.path.join(secret_dir, "secret.txt")
        with open(secret, "w") as f:
            f.write("secret\n")
        os.chmod(secret, 0o644)
        argv = rlimit_argv({}) + ["/bin/sh", "-c", f"cat /etc/hostname {secret} 2>/dev/null; echo end"]
        outside = run(argv)
        inside = run(wrap_command(BWRAP, argv, []))
        self.assertEqual(outside.stdout.split(), [open("/etc/hostname").read().strip(), "secret", "end"])
        self.assertEqual(inside.stdout.split(), ["end"], inside.stderr)

    def test_program_and_app_under_host_tmp_are_visible(self) -> None:
        """A program (a venv-style python link) and an app under the host's /tmp show through the private /tmp."""
        base = tempfile.mkdtemp(prefix="vx-jail-", dir="/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        os.makedirs(os.path.join(base, "venv", "bin"))
        python = os.path.join(base, "venv", "bin", "python")
        os.symlink(sys.executable, python)
        app = os.path.join(base, "app")
        os.makedirs(app)
        with open(os.path.join(app, "data.txt"), "w") as f:
            f.write("mine")
        os.chmod(os.path.join(app, "data.txt"), 0o644)
        argv = rlimit_argv({}) + [python, "-S", "-c", f"print(open({app + '/data.txt'!r}).read())"]
        inside = run(wrap_command(BWRAP, argv, [app]))
        self.assertEqual(inside.stdout.strip(), "mine", inside.stderr)

    def test_private_tmp_and_read_only_view(self) -> None:
        """Writes fail outside /tmp; /tmp is private and capped in size."""
        script = textwrap.dedent("""
            import os
            for path in ("/usr/vx-write-test", "/tmp/vx-write-test"):
                try:
                    open(path, "w").write("x")
                    print("wrote", path)
                except OSError as e:
                    print("refused", path, e.errno)
            try:
                with open("/tmp/fill", "wb") as f:
                    for _ in range(64):
                        f.write(b"x" * 1024 * 1024)
                        f.flush()
                print("filled")
            except OSError as e:
                print("tmp full", e.errno)
        """)
        argv = rlimit_argv({}) + [sys.executable, "-S", "-c", script]
        inside = run(wrap_command(BWRAP, argv, []))
        lines = inside.stdout.splitlines()
        self.assertEqual(lines[0], "refused /usr/vx-write-test 30", inside.stderr)
        self.assertEqual(lines[1], "wrote /tmp/vx-write-test")
        self.assertEqual(lines[2], "tmp full 28")
        self.assertFalse(os.path.exists("/tmp/vx-write-test"))

    def test_fork_bomb_is_stopped(self) -> None:
        """A Python fork bomb gets at most the process budget; killing the jail ends every process."""
        argv = rlimit_argv({}) + [sys.executable, "-S", "-c", FORK_BOMB]
        wrapped = wrap_command(BWRAP, argv, [])
        uid = next(int(a.split("=")[1]) for a in wrapped if a.startswith("--reuid="))
        self.assertGreaterEqual(uid, SANDBOX_UID_BASE)
        proc = subprocess.Popen(wrapped, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={})
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        self.assertLess(report["forks"], DEFAULT_MAX_PROCESSES)
        self.assertGreater(_processes_of(uid), 1)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(_processes_of(uid), 0)

    def test_killing_the_group_ends_a_jail_at_any_stage(self) -> None:
        """The jail's init stays in the process group the worker kills; only the program has a new session.

        bwrap's init sets ``--die-with-parent`` only after its setup: an init that
        left the group (``--new-session`` did, before that) outlived a bwrap killed
        in between and kept the child's pipes open, and the worker's stop hung.
        """
        argv = rlimit_argv({}) + ["/bin/sh", "-c", "echo up; read line"]
        proc = subprocess.Popen(wrap_command(BWRAP, argv, []), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={})
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        assert proc.stdout is not None
        self.assertEqual(proc.stdout.readline(), b"up\n")
        (init,) = _children(proc.pid)
        (program,) = _children(init)
        self.assertEqual(os.getpgid(init), proc.pid)
        self.assertEqual(os.getsid(program), program)
        os.killpg(proc.pid, signal.SIGKILL)
        # Killed together, nothing is left holding the pipe: it reads end of file at once.
        self.assertEqual(proc.stdout.read(), b"")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _processes_of(uid: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "-u", str(uid)], capture_output=True, text=True, check=False).stdout
    return len(out.split())


async def _in_thread(func: Any, *args: Any) -> Any:
    from twisted.internet.threads import deferToThread
    return await deferToThread(func, *args)


class PidRecorder:
    """Keeps the command line of every child the worker starts."""

    def __init__(self) -> None:
        self.cmdlines: list[list[str]] = []

    @hookimpl
    def child_started(self, api: Any, pid: int | None) -> None:
        # The command the worker spawned (reading /proc races with exec and with the child's exit).
        self.cmdlines.append(list(api.child.argv))


@pytest.mark.node
class WorkerJailTests(TestCase):
    """``isolation: bwrap`` in a worker config, end to end."""

    timeout = 60

    async def test_fork_bomb_in_python_child(self) -> None:
        """A Python child's fork bomb is held to the budget and the worker goes on serving."""
        recorder = PidRecorder()
        worker = Sandbox(python_worker_config(["-S", "-c", FORK_BOMB], isolation="bwrap", timeout=10),
                         broker=RecordingBroker(), hooks=hooks_with(recorder))
        await worker.setup()
        self.addCleanup(worker.teardown)
        outcome = await worker.process_message(make_user_message())
        record = worker.resources.resources["record"]
        forks = [r["forks"] for r in record.requests if r["cmd"] == "forks"]  # type: ignore[attr-defined]
        self.assertEqual(len(forks), 1)
        self.assertLess(forks[0], DEFAULT_MAX_PROCESSES)
        self.assertTrue(jailed(recorder.cmdlines[0]))
        self.assertEqual(outcome, "ok")


@pytest.mark.rabbitmq
@pytest.mark.redis
@pytest.mark.node
class JsWorkerJailTests(FaultBench, TestCase):
    """The JavaScript worker under bwrap: a normal session works, the host's network and files do not."""

    timeout = 60

    async def test_session_through_kv_and_outbound(self) -> None:
        """Under bwrap a session still counts visits in Redis and replies through RabbitMQ."""
        recorder = PidRecorder()
        self.plugins = (recorder,)
        await self.open_bench()
        await self.start_worker(isolation="bwrap")
        for n in (1, 2, 3):
            msg = vumi_message(self.tn, "kv", sandbox_id=ATTACKER)
            await self.publish(msg)
            await self.wait_replies([msg])
            self.assertEqual(self.replies_to([msg])[0]["content"], f"visits {n}")
        self.assertTrue(recorder.cmdlines and all(jailed(c) for c in recorder.cmdlines), recorder.cmdlines)

    async def test_app_cannot_reach_host_or_read_outside(self) -> None:
        """Even with Node's permission model off, the jailed app finds no listener and no file of the host."""
        port, factory = listen()
        self.addCleanup(port.stopListening)
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("secret")
        app = (f"var net = require('net'), fs = require('fs');"
               "api.on_inbound_message = function (c) { var self = this, m = c.msg;"
               f" var read; try {{ read = fs.readFileSync({json.dumps(secret)}, 'utf8'); }}"
               " catch (e) { read = e.code; }"
               f" var s = net.connect({port.getHost().port}, '127.0.0.1');"
               " function answer(net) { self.request('outbound.reply_to', {in_reply_to: m.message_id,"
               "  content: net + ' ' + read, continue_session: false}, function () { self.done(); }); }"
               " s.on('connect', function () { s.destroy(); answer('connected'); });"
               " s.on('error', function (e) { answer(e.code); }); };")
        await self.open_bench()
        await self.start_worker(isolation="bwrap", javascript=app, node_permissions=False)
        msg = vumi_message(self.tn, "probe", sandbox_id=ATTACKER)
        await self.publish(msg)
        await self.wait_replies([msg])
        self.assertEqual(self.replies_to([msg])[0]["content"], "ECONNREFUSED ENOENT")
        self.assertEqual(factory.connected, 0)  # type: ignore[attr-defined]


#: the realm escape, forced: a test-only app_context hands the app the runner's own ``process``
ESCAPE_CONTEXT = "{process: process}"
#: with the runner's process, signal the worker (signal 0: the kernel's permission check of a
#: real kill, without killing the test) and connect to a listener of the host
ESCAPE_APP = """
api.on_inbound_message = function (c) {
    var self = this, m = c.msg, target = JSON.parse(m.content), signal;
    try { process.kill(target.pid, 0); signal = 'signalled'; } catch (e) { signal = e.code; }
    var s = process.mainModule.require('net').connect(target.port, '127.0.0.1');
    function answer(net) {
        self.request('outbound.reply_to', {in_reply_to: m.message_id, content: net + ' ' + signal,
                                           continue_session: false}, function () { self.done(); });
    }
    s.on('connect', function () { s.destroy(); answer('connected'); });
    s.on('error', function (e) { answer(e.code); });
};
"""


@pytest.mark.node
class EscapedChildTests(TestCase):
    """A JS child that has escaped the runner's realm still meets the OS layer."""

    timeout = 60

    async def escape(self, **extra: Any) -> tuple[str, int]:
        """Run the escaping app once; returns its reply and how many connections the listener took."""
        port, factory = listen()
        self.addCleanup(port.stopListening)
        broker = RecordingBroker()
        config = js_config(ESCAPE_APP, sandbox={"outbound": {"cls": "outbound"}}, app_context=ESCAPE_CONTEXT,
                           **extra)
        worker = JsSandbox(config, broker=broker, hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)
        content = json.dumps({"pid": os.getpid(), "port": port.getHost().port})
        self.assertEqual(await worker.process_message(make_user_message(content=content)), "ok")
        (reply,) = broker.messages("test_transport.outbound")
        return reply["content"], factory.connected  # type: ignore[attr-defined]

    async def test_default_isolation_holds_escaped_child(self) -> None:
        """Under the default isolation the escaped child reaches no host listener and cannot signal the worker."""
        self.assertGreater(os.getpid(), 100)  # so no process of the jail's own PID namespace has it
        content, connected = await self.escape()
        self.assertEqual(content, "ECONNREFUSED ESRCH")
        self.assertEqual(connected, 0)

    async def test_none_as_root_cannot_signal_worker(self) -> None:
        """Under ``isolation: none`` the escaped child reaches the network, but as root's child it cannot signal."""
        if os.geteuid() != 0:
            raise SkipTest("only a root worker can give its children a uid of their own")
        content, connected = await self.escape(isolation="none")
        self.assertEqual(content, "connected EPERM")
        self.assertEqual(connected, 1)


class CheckCommandTests(SynchronousTestCase):
    """``vxsandbox check`` reports the isolation."""

    def test_check_names_isolation(self) -> None:
        """The check lists the active isolation and bwrap's availability, and rejects an unknown one."""
        from vxsandbox_core.cli import check_config
        raw = {"worker": "sandbox", "transport_name": "t", "executable": sys.executable}
        lines, errors = check_config(dict(raw, isolation="bwrap"))
        self.assertEqual(errors, [])
        self.assertTrue(any(line.startswith("isolation: bwrap (no network") and "bwrap at" in line for line in lines))
        lines, errors = check_config(dict(raw, isolation="none"))
        self.assertTrue(any(line.startswith("isolation: none") for line in lines))
        lines, errors = check_config(raw)
        self.assertTrue(any(line.startswith("isolation: auto -> bwrap") for line in lines), lines)
        lines, errors = check_config(dict(raw, isolation="jail"))
        self.assertEqual(len([e for e in errors if "'isolation'" in e]), 1, errors)
