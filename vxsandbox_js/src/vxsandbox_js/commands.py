"""vxsandbox-js's hook plugin: adds ``vxsandbox chat`` to the command line.

Registered through the ``vxsandbox`` entry point group. The chat module
(and the worker it builds) is imported only when ``chat`` runs, so worker
processes that load every plugin do not pay for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from vxsandbox_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from vxsandbox_core.cli import Commands


def run_chat_command(args: argparse.Namespace) -> int | Awaitable[int]:
    from .chat import run_command
    return run_command(args)


@hookimpl
def register_commands(commands: Commands) -> None:
    from .chat import DESCRIPTION, add_arguments
    parser = commands.add("chat", run_chat_command, help="talk to a JavaScript app in the terminal (embedded defaults)",
                          description=DESCRIPTION)
    add_arguments(parser)
