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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("vxsandbox.worker")

#: links already reported to the operator, so a refused link is logged once per worker, not per child
_reported: set[tuple[str, str]] = set()


@dataclass
class AppReads:
    """The paths one app may read: ``allow`` for ``--allow-fs-read``, ``binds`` for the bwrap jail."""

    allow: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    #: symlinked entries refused, as (link, its real path)
    refused: list[tuple[str, str]] = field(default_factory=list)


def app_reads(app: str) -> AppReads:
    """What the app at ``app`` (an absolute file name) may read by Node's module resolution."""
    reads = AppReads(allow=_both(app), binds=_both(app))
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
