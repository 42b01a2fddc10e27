"""Where code meets Twisted: call anything and get a Deferred back; the reactor to use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred


def call_deferred(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Call ``f`` and return a Deferred of its result.

    A plain value, a Deferred or a coroutine (from ``async def``) all become a
    Deferred; an exception raised by ``f`` becomes a failed Deferred. (Twisted's
    ``maybeDeferred`` does all of it since 23.8, the oldest release this needs.)
    """
    return maybeDeferred(f, *args, **kwargs)


def default_reactor(reactor: Any = None) -> Any:
    """``reactor`` when given (tests pass a ``task.Clock`` or a fake), else Twisted's global reactor.

    The global one is imported only here and only when needed: importing it
    installs Twisted's default reactor, which a command that wants another
    one must not have done first.
    """
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as installed
    return installed
