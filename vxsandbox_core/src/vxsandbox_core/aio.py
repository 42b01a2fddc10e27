"""Where code meets Twisted: call anything and get a Deferred back; the reactor to use."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred


def call_deferred(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """Call ``f`` and return a Deferred of its result.

    A plain value, a Deferred or a coroutine (from ``async def``) all become a
    Deferred; an exception raised by ``f`` becomes a failed Deferred.
    """

    def call() -> Any:
        result = f(*args, **kwargs)
        return ensureDeferred(result) if inspect.iscoroutine(result) else result

    return maybeDeferred(call)


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
