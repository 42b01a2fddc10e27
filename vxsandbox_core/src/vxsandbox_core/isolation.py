"""The OS layer of a child's confinement: ``isolation: auto`` (the default), ``bwrap`` or ``none``.

With ``isolation: bwrap`` every child runs under bubblewrap (Debian package
``bubblewrap``):

- its own network namespace with only a loopback of its own (``--unshare-net``),
  so it reaches no listener of the host, not even on 127.0.0.1;
- a read-only view of the system directories (``/usr``, ``/lib*``, ``/bin``,
  ``/sbin``, ``/etc/localtime``; a symlinked one, such as ``/bin -> usr/bin``
  on merged-/usr systems, stays a symlink), of the program's real install
  prefix (never ``/``), and of the paths the worker says the child must read
  (the Node runner, the app file and the ``node_modules`` its resolution
  searches, the working directory); nothing else of the host file system
  exists inside;
- a private, size-capped ``/tmp`` (tmpfs), a minimal ``/dev`` and a ``/proc`` of
  its own PID namespace (``--unshare-pid``), so it sees and can signal no
  process of the host, the worker included; its own IPC and UTS namespaces,
  a new session for the program (no terminal to inject keystrokes into), and
  ``--die-with-parent``: the child and everything it started die with the
  worker, and with the bwrap process the worker kills.
- a fork bomb is stopped by ``RLIMIT_NPROC``. The kernel does not enforce that
  limit for root, so when the worker runs as root the child is switched by
  ``setpriv`` (util-linux) to an unprivileged uid of its own, one per child
  from a rotating range, with no capabilities and ``no_new_privs``: each
  child's process budget is its own. When the worker is not root, bwrap's
  user namespace gives the same per-child count.

``isolation: auto`` means ``bwrap`` wherever bubblewrap is usable: installed
and able to build the jail on this kernel, which :func:`probe_bwrap` tries
once per process (containers and hardened kernels often forbid the
namespaces). Where it is not, the children run as under ``none`` and the
worker and ``vxsandbox check`` say so with a WARNING.

``isolation: none`` runs the child under the rlimits alone: it can reach the
network, 127.0.0.1 included. A worker running as root still switches each
child to its own unprivileged uid with ``setpriv``, so it cannot signal the
worker or another child; a worker that is not root cannot change the child's
uid, and the child can then signal the worker.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError
from .rlimits import process_limit, with_process_limit

#: the values ``isolation`` accepts
ISOLATION_MODES = ("auto", "none", "bwrap")
#: the isolation of a config that does not set one
DEFAULT_ISOLATION = "auto"
#: bytes of the private ``/tmp`` (tmpfs lives in RAM, so it must be bounded)
TMP_SIZE = 16 * 1024 * 1024
#: first uid handed to children of a root worker, and how many are rotated through; far above
#: the ranges distributions give users and /etc/subuid, so no file on the host belongs to them
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 65536
#: read-only system directories of the jail (each bound when it exists, as a symlink when it is one)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives",
                "/etc/ld.so.cache", "/etc/localtime")

_uids = itertools.cycle(range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT))


def find_bwrap() -> str | None:
    """The path of bubblewrap's ``bwrap``, or None when it is not installed."""
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None)


def find_setpriv() -> str | None:
    """The path of util-linux's ``setpriv``, or None."""
    return shutil.which("setpriv") or next(
        (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None)


def bwrap_problem() -> str | None:
    """Why ``bwrap`` cannot jail children here, or None when it can (the probe runs once per bwrap path)."""
    bwrap = find_bwrap()
    if bwrap is None:
        return "bubblewrap's bwrap program is not on PATH (apt-get install bubblewrap)"
    if os.geteuid() == 0 and find_setpriv() is None:
        return ("a worker running as root needs util-linux's setpriv to drop the child's privileges "
                "(apt-get install util-linux)")
    return probe_bwrap(bwrap)


@functools.lru_cache(maxsize=8)
def probe_bwrap(bwrap: str) -> str | None:
    """Build the jail once with ``bwrap`` around ``true``: None when it works, else what bwrap said.

    Runs a short subprocess, so it belongs to config and startup time, never to the reactor's
    message path; the answer is cached for the life of the process.
    """
    true = shutil.which("true") or "/usr/bin/true"
    try:
        done = subprocess.run(_jail(bwrap, {}, [true], []), capture_output=True, text=True,
                              env={}, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap} could not be run: {e}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return f"{bwrap} failed (exit {done.returncode}): {said[-1] if said else 'no message'}"
    return None


def check_isolation(value: Any) -> str:
    """Validate the ``isolation`` config value; returns it.

    ``auto`` probes bubblewrap (once) so that the first child does not pay for it.

    :raises ValueError: not one of :data:`ISOLATION_MODES`, or ``bwrap`` where
        bubblewrap is not installed or cannot build its jail (or, for a root
        worker, without ``setpriv``).
    """
    if value not in ISOLATION_MODES:
        raise ValueError(f"expected one of {', '.join(repr(m) for m in ISOLATION_MODES)}")
    problem = bwrap_problem() if value in ("auto", "bwrap") else None
    if value == "bwrap" and problem is not None:
        raise ValueError(f"'bwrap' cannot jail children here: {problem}")
    return str(value)


def isolation_mode(config: Any) -> str:
    """The ``isolation`` of a worker config (an object with attributes, or a mapping); ``auto`` when unset."""
    if isinstance(config, Mapping):
        mode = config.get("isolation")
    else:
        mode = getattr(config, "isolation", None)
        if mode is None and hasattr(config, "get"):
            mode = config.get("isolation")
    return str(mode or DEFAULT_ISOLATION)


def effective_isolation(mode: str) -> str:
    """What children really run under: ``bwrap`` or ``none`` (``auto`` is ``bwrap`` where it is usable)."""
    if mode == "auto":
        return "none" if bwrap_problem() is not None else "bwrap"
    return mode


def unjailed_consequences() -> str:
    """What untrusted code can do when its child runs without the jail, for this worker's user."""
    if os.geteuid() == 0:
        return ("untrusted code can reach the network (127.0.0.1 included: Redis, RabbitMQ, the metrics "
                "port); each child runs as its own unprivileged uid, so it cannot signal the worker")
    return ("untrusted code can reach the network (127.0.0.1 included: Redis, RabbitMQ, the metrics "
            "port) and signal (kill) the worker, which runs as the same user")


def isolation_warning(mode: str) -> str | None:
    """The WARNING for ``isolation: auto`` without a usable bubblewrap; None when there is nothing to warn."""
    if mode != "auto":
        return None
    problem = bwrap_problem()
    if problem is None:
        return None
    return f"isolation: auto cannot use bubblewrap ({problem}); children run with rlimits only: " \
           f"{unjailed_consequences()}"


def unreadable_by_children(paths: Iterable[str], programs: Iterable[str] = ()) -> list[str]:
    """Of ``paths`` (files and folders a child must read) and ``programs`` (what it must run), those a
    root worker's children under ``isolation: none`` cannot reach, each as ``"<path>: <why>"``.

    Such a child runs as an unprivileged uid of its own with no groups, so only the permission bits
    for others apply on the host's own file system: every folder on the way needs ``o+x``, a file
    ``o+r``, a program ``o+x`` (node or python installed under ``/root``, as nvm and pyenv do, is out
    of reach). (In the bwrap jail the folders above a bound path are the jail's own, so this is for
    ``none``.) A missing path, or a folder or file with an ACL, which may grant what the bits do not,
    is not reported.
    """
    problems = []
    wanted = [(os.path.abspath(p), False) for p in paths] + [(os.path.abspath(p), True) for p in programs]
    for path, run in dict.fromkeys(wanted):
        reason = _closed_to_others(path, run)
        if reason is not None:
            problems.append(f"{path}: {reason}")
    return problems


def describe_unreachable(problems: list[str]) -> str:
    """The one line the worker logs (and ``vxsandbox check`` reports) for :func:`unreadable_by_children`'s problems."""
    return ("children run as unprivileged uids and will not be able to run or read what they need, "
            "so every run will fail: " + "; ".join(problems))


def _closed_to_others(path: str, run: bool) -> str | None:
    if not os.path.exists(path):
        return None
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        parts = candidate.split("/")[1:]
        folder = "/"
        for name in parts[:-1]:
            folder = os.path.join(folder, name)
            if _denied(folder, stat.S_IXOTH):
                return f"{folder} cannot be entered by other users (mode {_mode(folder)}); chmod o+x it " \
                       f"or keep the files elsewhere"
        if run:
            if _denied(candidate, stat.S_IXOTH):
                return f"{candidate} cannot be run by other users (mode {_mode(candidate)}); chmod o+x it"
            continue
        need = stat.S_IXOTH if os.path.isdir(candidate) else stat.S_IROTH
        if _denied(candidate, need):
            return f"{candidate} cannot be read by other users (mode {_mode(candidate)}); " \
                   f"chmod o+{'x' if need == stat.S_IXOTH else 'r'} it"
    return None


def _denied(path: str, bit: int) -> bool:
    try:
        if os.stat(path).st_mode & bit:
            return False
        acl = "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False
    return not acl


def _mode(path: str) -> str:
    return oct(stat.S_IMODE(os.stat(path).st_mode))[2:].rjust(4, "0")


def describe_isolation(mode: str) -> str:
    """One line for ``vxsandbox check``: which isolation is active and what it leaves open."""
    effective = effective_isolation(mode)
    shown = f"auto -> {effective}" if mode == "auto" else mode
    if effective == "bwrap":
        who = ("each child as its own unprivileged uid" if os.geteuid() == 0
               else "in a user namespace")
        return (f"isolation: {shown} (no network, own PID namespace, read-only view of what the child "
                f"needs, private /tmp, {who}); bwrap at {find_bwrap()}")
    warning = isolation_warning(mode)
    if warning is not None:
        return f"WARNING: {warning}"
    root = (" the worker runs as root, so RLIMIT_NPROC counts each child's own uid only;"
            if os.geteuid() == 0 else "")
    problem = bwrap_problem()
    available = f"bwrap available at {find_bwrap()}" if problem is None else f"bwrap not usable: {problem}"
    return f"isolation: none (rlimits only):{root} {unjailed_consequences()}; {available}"


def wrap_command(config: Any, argv: list[str], read_paths: list[str]) -> list[str]:
    """The command to spawn for a child: ``argv`` itself, or ``argv`` inside the jail.

    :param config: the worker config; its ``isolation`` picks the mode, its
        ``rlimits`` may set ``RLIMIT_NPROC`` and its ``path`` is the child's
        working directory.
    :param argv: the full command, ``[prlimit, options..., "--", executable, *args]``.
    :param read_paths: files and directories the child must be able to read.
    """
    if effective_isolation(isolation_mode(config)) != "bwrap":
        # Without the jail a root worker's child still gets a uid of its own: it can then signal
        # neither the worker nor another tenant's child.
        return _unprivileged(argv) if os.geteuid() == 0 else list(argv)
    bwrap = find_bwrap()
    if bwrap is None:
        raise ConfigError("isolation", "'bwrap' needs bubblewrap's bwrap program, which is not on PATH "
                                       "(apt-get install bubblewrap)")
    return _jail(bwrap, config, argv, read_paths)


def _jail(bwrap: str, config: Any, argv: list[str], read_paths: list[str]) -> list[str]:
    workdir = _config_value(config, "path")
    paths = [*read_paths, *([workdir] if isinstance(workdir, str) and workdir else [])]
    limited = with_process_limit(argv, process_limit(_config_value(config, "rlimits")))
    if os.geteuid() == 0:
        inner = _unprivileged(limited)
        # As root bwrap sets the jail up without a user namespace (one would keep the child's real
        # uid 0, which the kernel exempts from RLIMIT_NPROC); setpriv then needs these two.
        privilege = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        inner = limited
        privilege = ["--unshare-user"]
    # setsid makes bwrap a process group leader, so killing the child kills the group: a bwrap
    # killed mid-setup otherwise leaves its namespace's init holding the child's pipes. That init
    # must stay in the group: bwrap's --new-session would move it to a session of its own before
    # it sets --die-with-parent's signal, so the session is made inside the jail, for the program.
    setsid = shutil.which("setsid") or "/usr/bin/setsid"
    return [setsid, bwrap, *bwrap_options(_program_paths(argv) + paths, workdir), *privilege, "--",
            setsid, *inner]


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run by ``setpriv`` as the next uid of the rotating range, without capabilities."""
    setpriv = find_setpriv()
    if setpriv is None:
        raise ConfigError("isolation", "a worker running as root needs util-linux's setpriv to run each "
                                       "child as an unprivileged uid (apt-get install util-linux)")
    uid = next(_uids)
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--", *argv]


def bwrap_options(read_paths: Iterable[str], workdir: str | None = None) -> list[str]:
    """bwrap's options for the jail: namespaces, system directories, ``read_paths`` read-only, private /tmp."""
    options = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--hostname", "sandbox",
               # The private /tmp comes before the binds, so a program or app that lives under the
               # host's /tmp is bound on top of it rather than hidden by it.
               "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]
    present: set[str] = {"/", "/tmp"}
    bound: set[str] = set()
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            options += _parents(path, present)
            options += ["--ro-bind", path, path]
        else:
            continue
        present.add(path)
        bound.add(path)
    for path in dict.fromkeys(os.path.abspath(p) for p in read_paths):
        # A path that resolves to / would lay the host's whole file system over the jail.
        if _covered(path, bound) or not os.path.exists(path) or os.path.realpath(path) == "/":
            continue
        options += _parents(path, present)
        options += ["--ro-bind", path, path]
        present.add(path)
        bound.add(path)
    if workdir:
        options += ["--chdir", os.path.abspath(workdir)]
    return options


def _config_value(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _program_paths(argv: list[str]) -> list[str]:
    """What running ``argv`` needs to read: its programs (the first word, and the word after each
    ``--`` of a wrapper such as prlimit) and each one's install prefix; never its other arguments."""
    programs = argv[:1] + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--"]
    paths: list[str] = []
    for program in programs:
        if not os.path.isabs(program) or not os.path.isfile(program):
            continue
        for path in _link_chain(program):
            # The real directory: on merged-/usr systems /bin/sh lives in /bin -> usr/bin, whose
            # "prefix" taken literally would be the host's / (every file of the host).
            directory = os.path.realpath(os.path.dirname(path))
            prefix = os.path.dirname(directory)
            # <prefix>/bin/<program>: the program's libraries live under <prefix> (pyenv, nvm, /opt).
            if os.path.basename(directory) == "bin" and prefix != "/":
                paths.append(prefix)
            else:
                paths.append(os.path.join(directory, os.path.basename(path)))
    return paths


def _link_chain(path: str) -> list[str]:
    """``path``, every symlink it goes through (a venv's python links to another python), and its target."""
    chain = [path]
    while os.path.islink(chain[-1]) and len(chain) < 40:
        target = os.readlink(chain[-1])
        chain.append(os.path.normpath(os.path.join(os.path.dirname(chain[-1]), target)))
    real = os.path.realpath(path)
    return list(dict.fromkeys([*chain, real]))


def _covered(path: str, bound: set[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in bound)


def _parents(path: str, present: set[str]) -> list[str]:
    """``--dir`` options for the missing parents of ``path``, world-searchable (bwrap makes them 0700)."""
    options: list[str] = []
    parent = os.path.dirname(path)
    missing: list[str] = []
    while parent not in present and parent != "/":
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        options += ["--perms", "0755", "--dir", directory]
        present.add(directory)
    return options
