"""Resource limits (rlimits) of a sandboxed child: parsing, defaults, clamping, and the ``prlimit`` command.

Limits are applied by util-linux's ``prlimit``, which sets them and then
execs the program, so they hold from the child's first instruction and cost
under a millisecond. A limit is never raised above what the worker itself
has: the child gets ``min(requested, worker's own)`` for soft and hard.
``RLIMIT_CPU``'s soft limit also tells the child pool when a warm child has
used half of it and should be retired.
"""

from __future__ import annotations

import os
import resource
import shutil
from typing import Any

from .errors import ConfigError

MiB = 1024 * 1024

#: The seed's restrictive defaults, applied unless the config overrides them.
DEFAULT_RLIMITS: dict[str, int] = {
    "RLIMIT_CORE": 1 * MiB,
    "RLIMIT_CPU": 60,
    "RLIMIT_FSIZE": 1 * MiB,
    "RLIMIT_DATA": 64 * MiB,
    "RLIMIT_STACK": 1 * MiB,
    "RLIMIT_RSS": 10 * MiB,
    "RLIMIT_NOFILE": 15,
    "RLIMIT_MEMLOCK": 64 * 1024,
    "RLIMIT_AS": 196 * MiB,
}

#: processes (threads count too) one jailed child may have unless ``rlimits`` sets ``RLIMIT_NPROC``;
#: Node 20 starts about a dozen threads
DEFAULT_MAX_PROCESSES = 64


def _rlimit_number(name: Any) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        known = {getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")}
        if name not in known:
            raise ValueError(f"unknown rlimit number {name}")
        return name
    if isinstance(name, str):
        upper = name.upper()
        attr = upper if upper.startswith("RLIMIT_") else "RLIMIT_" + upper
        number = getattr(resource, attr, None)
        if isinstance(number, int):
            return number
        if upper.isdigit():
            return _rlimit_number(int(upper))
    raise ValueError(f"unknown rlimit {name!r}; expected a name such as RLIMIT_AS or a number")


def _rlimit_value(name: Any, value: Any) -> tuple[int, int]:
    def one(v: Any) -> int:
        if v is None or v == "unlimited":
            return resource.RLIM_INFINITY
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        raise ValueError(f"rlimit {name!r} value {value!r} is not a non-negative integer, "
                         "'unlimited', or a [soft, hard] pair of them")
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"rlimit {name!r} value {value!r} must be [soft, hard]")
        soft, hard = one(value[0]), one(value[1])
    else:
        soft = hard = one(value)
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        raise ValueError(f"rlimit {name!r} soft limit exceeds its hard limit")
    return soft, hard


def parse_rlimits(value: dict[Any, Any]) -> dict[int, tuple[int, int]]:
    """Turn the ``rlimits`` mapping into ``{RLIMIT number: (soft, hard)}``.

    Names may be given with or without the ``RLIMIT_`` prefix, in any case, or
    as numbers; values as one integer (soft and hard alike), a ``[soft, hard]``
    pair, or ``null`` / ``"unlimited"`` for no limit.
    """
    limits: dict[int, tuple[int, int]] = {}
    for name, limit in value.items():
        limits[_rlimit_number(name)] = _rlimit_value(name, limit)
    return limits


def effective_rlimits(overrides: dict[int, tuple[int, int]],
                      defaults: dict[str, int] | None = None) -> dict[int, tuple[int, int]]:
    """Merge the defaults with the configured limits."""
    merged = parse_rlimits(DEFAULT_RLIMITS if defaults is None else defaults)
    merged.update(overrides)
    return merged


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


def cpu_soft_limit(limits: dict[int, tuple[int, int]]) -> float | None:
    """The RLIMIT_CPU soft limit among ``limits``, or None when unlimited or unset."""
    soft = limits.get(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, 0))[0]
    return None if soft == resource.RLIM_INFINITY else float(soft)


def process_limit(configured: Any) -> int | None:
    """The ``RLIMIT_NPROC`` a jailed child gets: :data:`DEFAULT_MAX_PROCESSES`, or None when ``configured`` (the
    ``rlimits`` config) sets its own."""
    for name in configured or {}:
        if name == resource.RLIMIT_NPROC or str(name).upper() in ("NPROC", "RLIMIT_NPROC"):
            return None
    return DEFAULT_MAX_PROCESSES


def with_process_limit(argv: list[str], max_processes: int | None) -> list[str]:
    """``argv`` with ``RLIMIT_NPROC`` set, unless the config (hence ``argv``) sets its own."""
    if max_processes is None or any(a.startswith("--nproc") for a in argv):
        return list(argv)
    option = f"--nproc={max_processes}:{max_processes}"
    if argv and os.path.basename(argv[0]) == "prlimit" and "--" in argv:
        end = argv.index("--")
        return [*argv[:end], option, *argv[end:]]
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    return [prlimit, option, "--", *argv]
