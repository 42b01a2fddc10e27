"""Finding Node.js, reading its version, and the command-line flags that confine the runner.

The child's environment is empty (nothing is inherited from the worker), so
the node executable is always resolved to an absolute path here: the
config's ``executable``, else ``node`` (or ``nodejs``) on the worker's PATH,
else the usual install locations.

Node's permission model (``--experimental-permission`` on Node 20 and 21,
``--permission`` from Node 22.13 / 23.5 on) limits file reads to the paths
given with ``--allow-fs-read``, forbids every file write, child processes,
worker threads, native addons and WASI unless they are allowed by flag. It
does not restrict the network. Node 18 and older have no permission model:
the runner then still starts, with only the rlimits and the heap bound.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from vxsandbox_core.errors import ConfigError
from vxsandbox_core.process import find_executable

#: Where node usually lives when it is not on PATH.
USUAL_LOCATIONS = (
    "/usr/local/bin/node",
    "/usr/bin/node",
    "/usr/bin/nodejs",
    "/opt/homebrew/bin/node",
    "/snap/bin/node",
)


@dataclass(frozen=True)
class NodeVersion:
    """A Node.js version and the hardening flags it supports."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def permission_flag(self) -> str | None:
        """The flag that turns the permission model on, or None when this Node has none."""
        if (self.major, self.minor) >= (23, 5) or (self.major == 22 and self.minor >= 13):
            return "--permission"
        if self.major >= 20:
            return "--experimental-permission"
        return None

    @property
    def can_silence_experimental_warning(self) -> bool:
        """Whether ``--disable-warning`` exists (Node 20.11 and 21.3 on)."""
        return (self.major, self.minor) >= (21, 3) or (self.major == 20 and self.minor >= 11)


def find_node(executable: str | None = None) -> str:
    """Return the absolute path of the node executable.

    :param executable: the config's ``executable``: a path, or a program name
        searched on PATH; ``None`` searches for ``node`` then ``nodejs`` on
        PATH and then in :data:`USUAL_LOCATIONS`.
    :raises ConfigError: nothing suitable was found.
    """
    if executable is not None:
        return os.path.abspath(find_executable(executable))
    for name in ("node", "nodejs"):
        found = shutil.which(name)
        if found is not None:
            return os.path.abspath(found)
    for path in USUAL_LOCATIONS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ConfigError("executable", "Node.js was not found on PATH nor in "
                                    f"{', '.join(USUAL_LOCATIONS)}; install Node.js 18 or newer "
                                    "or set 'executable' to the node program")


@lru_cache(maxsize=16)
def node_version(executable: str) -> NodeVersion:
    """Ask a node executable for its version (once per path and process).

    :raises ConfigError: it does not run or does not answer like node.
    """
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=30, env={}, check=False).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError("executable", f"{executable!r} could not be run: {e}") from None
    match = re.match(r"v(\d+)\.(\d+)\.(\d+)", out.strip())
    if match is None:
        raise ConfigError("executable", f"{executable!r} is not Node.js (--version said {out.strip()!r})")
    return NodeVersion(int(match[1]), int(match[2]), int(match[3]))


@lru_cache(maxsize=1)
def runner_path() -> str:
    """The absolute path of the runner script shipped with this package."""
    return str(resources.files("vxsandbox_js").joinpath("runner.js"))


@lru_cache(maxsize=1)
def runner_files() -> list[str]:
    """The runner and the files it requires: what a child must be allowed to read of this package."""
    package = resources.files("vxsandbox_js")
    return [runner_path(), str(package.joinpath("preload.js"))]


#: V8 flags every child runs with, before the hardening flags. ``--single-threaded-gc``: a child
#: collects garbage on its own thread, without V8's concurrent marking and parallel scavenging
#: helpers. Those are made for a spare core beside one busy program; a sandbox host runs many
#: children to a core, and there they cost more CPU than they save. Measured (2 cores, Node 20,
#: ``benchmarks/README.md`` 2026-12-02): node CPU per warm toolkit message in a long-lived child
#: 1.66-1.77 ms against 1.95-3.24 (8 runs each of 3,000 messages), one warm toolkit child 274-276
#: against 240-243 messages/s with 6 % less RSS; the reply-only app within noise.
GC_FLAGS = ("--single-threaded-gc",)


def hardening_flags(version: NodeVersion, max_old_space_size: int | None, permissions: bool,
                    allow_fs_read: list[str]) -> list[str]:
    """The node flags placed before the runner script.

    :param version: the node that runs them.
    :param max_old_space_size: MiB for V8's old space, so a memory bomb ends
        in a fast heap-limit abort rather than an rlimit crash; ``None`` for V8's default.
    :param permissions: turn the permission model on where the version has it.
    :param allow_fs_read: paths (files or whole directories) the child may read.
    """
    flags: list[str] = []
    if max_old_space_size is not None:
        flags.append(f"--max-old-space-size={max_old_space_size}")
    flag = version.permission_flag if permissions else None
    if flag is not None:
        if version.can_silence_experimental_warning:
            # Otherwise every run logs "Permission is an experimental feature" as an app error.
            flags.append("--disable-warning=ExperimentalWarning")
        flags.append(flag)
        for path in dict.fromkeys(allow_fs_read):
            flags.append(f"--allow-fs-read={path}")
    return flags
