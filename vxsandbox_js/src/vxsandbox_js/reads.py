"""What a JavaScript child may read: what Node's module resolution loads from the app file, no wider.

From the app file Node searches ``node_modules`` in the app's folder and in
each of its ancestors. The child may read:

- the app file;
- each existing ancestor ``node_modules``, by its real path too, as long as
  that real path is still a folder named ``node_modules`` (a
  ``node_modules -> /`` or ``node_modules -> /home`` link is refused);
- under each of them every package entry (and each entry of an ``@scope``
  folder); an entry that is a symlink (``npm link``, pnpm) is followed only
  when its real path is a package folder (holds a ``package.json``) that is
  neither ``/`` nor an ancestor of the app. ``node_modules/x -> /`` gives
  nothing.

Node's permission model follows symlinks found inside an allowed path, so
the permission model is given the entries one by one (a refused link is
then outside every allowed path), while the bwrap jail binds the
``node_modules`` folders whole: inside the jail a link resolves in the
jail's own view, which holds only what was bound. Anything wider is the
operator's explicit ``allow_fs_read``.

The worker asks for every message (a warm child's key holds what it may
read) and for every spawn, so the walk is kept per app file and done again
only when the app file (by its real path: a re-pointed release link) or
one of the folders the walk listed changed: each ancestor
``node_modules`` (made, removed, re-pointed, an entry added, removed or
re-linked) and each ``@scope`` folder in them. A result is kept only once
those folders have been still for :data:`SETTLED_NS`, so a change within the
file system's timestamp granularity of the walk is never missed. What the
folders' times cannot show (a linked package's own folder gaining or losing
its ``package.json``) is seen at the next change of its ``node_modules``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

log = logging.getLogger("vxsandbox.worker")

#: links already reported to the operator, so a refused link is logged once per worker, not per child
_reported: set[tuple[str, str]] = set()

#: how long the listed folders must have been unchanged before a walk is reused (2 s, in ns)
SETTLED_NS = 2_000_000_000

#: Folder state: (device, inode, mtime in ns) of each folder a walk depends on, None where it is missing.
Signature = tuple[tuple[int, int, int] | None, ...]

#: per app file: the folders its walk listed, their state then, and the walk
_walks: dict[str, tuple[list[str], Signature, AppReads]] = {}


@dataclass
class AppReads:
    """The paths one app may read: ``allow`` for ``--allow-fs-read``, ``binds`` for the bwrap jail."""

    allow: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    #: symlinked entries refused, as (link, its real path)
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: the folders the walk listed or looked for: a change to any of them may change the result
    watched: list[str] = field(default_factory=list)


def app_reads(app: str) -> AppReads:
    """What the app at ``app`` (an absolute file name) may read by Node's module resolution.

    The result is shared between calls: callers must not change it.
    """
    kept = _walks.get(app)
    if kept is not None:
        watched, signature, reads = kept
        if _signature(watched) == signature:
            return reads
    reads = _walk(app)
    signature = _signature(reads.watched)
    if _settled(signature):
        _walks[app] = (reads.watched, signature, reads)
    else:
        _walks.pop(app, None)
    return reads


def _signature(folders: list[str]) -> Signature:
    states: list[tuple[int, int, int] | None] = []
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError:
            states.append(None)
        else:
            states.append((st.st_dev, st.st_ino, st.st_mtime_ns))
    return tuple(states)


def _settled(signature: Signature) -> bool:
    now = time.time_ns()
    return all(state is None or now - state[2] >= SETTLED_NS for state in signature)


def _walk(app: str) -> AppReads:
    # The app file by its real path: a re-pointed link (a new release) gives a new inode.
    reads = AppReads(allow=_both(app), binds=_both(app), watched=[app])
    app_real = os.path.realpath(app)
    directory = os.path.dirname(app)
    while True:
        if os.path.basename(directory) != "node_modules":
            _add_node_modules(reads, os.path.join(directory, "node_modules"), app_real)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for link, real in reads.refused:
        if (link, real) not in _reported:
            _reported.add((link, real))
            log.warning("the app may not read through %s: it links to %s, which is not a package folder "
                        "(a folder with a package.json that is neither / nor an ancestor of the app); "
                        "add the path to allow_fs_read if the app needs it", link, real)
    return reads


def _add_node_modules(reads: AppReads, path: str, app_real: str) -> None:
    reads.watched.append(path)
    if not os.path.isdir(path):
        return
    real = os.path.realpath(path)
    if os.path.basename(real) != "node_modules":
        reads.refused.append((path, real))
        return
    reads.binds.extend(_both(path))
    for name in sorted(os.listdir(path)):
        entry = os.path.join(path, name)
        # Packages' command links: require() never loads through them.
        if name == ".bin":
            continue
        if name.startswith("@") and os.path.isdir(entry) and not os.path.islink(entry):
            reads.watched.append(entry)
            for scoped in sorted(os.listdir(entry)):
                _add_entry(reads, os.path.join(entry, scoped), app_real)
        else:
            _add_entry(reads, entry, app_real)


def _add_entry(reads: AppReads, entry: str, app_real: str) -> None:
    real = os.path.realpath(entry)
    if os.path.islink(entry):
        if not _is_package(real, app_real):
            reads.refused.append((entry, real))
            return
        # Inside the jail the link resolves to its real path, which must then exist there.
        reads.binds.append(real)
    # Node reads a module by its real path (it resolves symlinks), stats it by the path it searched.
    reads.allow.extend(_both(entry))


def _is_package(real: str, app_real: str) -> bool:
    return (os.path.isdir(real) and os.path.isfile(os.path.join(real, "package.json"))
            and not _holds(real, app_real))


def _holds(directory: str, app_real: str) -> bool:
    """Whether ``directory`` is ``/`` or an ancestor of the app (it would show the app's whole tree and more)."""
    return directory == "/" or app_real.startswith(directory.rstrip("/") + "/")


def _both(path: str) -> list[str]:
    return list(dict.fromkeys([path, os.path.realpath(path)]))


#: per app file: its state when read, and its text
_sources: dict[str, tuple[tuple[int, ...], str]] = {}

#: (device, inode, size, mtime ns, ctime ns) of a file, None when it is missing
FileState = tuple[int, int, int, int, int] | None


def stat_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a file's content changed without reading it (a rewrite in place changes ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_state(path: str) -> FileState:
    """:func:`stat_state` of ``path``, or None when it cannot be stat'ed."""
    try:
        return stat_state(os.stat(path))
    except OSError:
        return None


def app_source(path: str) -> str:
    """The text of the app file ``path``, read again only when the file changed.

    The file is stat'ed for every call (a run reads the app as it is then: an
    edited app takes effect at its next message); its text is kept once it has
    been unchanged for :data:`SETTLED_NS`, so a bundle of hundreds of KiB is
    not read for every message.
    """
    state = stat_state(os.stat(path))
    kept = _sources.get(path)
    if kept is not None and kept[0] == state:
        return kept[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if time.time_ns() - state[3] >= SETTLED_NS:
        _sources[path] = (state, text)
    else:
        _sources.pop(path, None)
    return text
