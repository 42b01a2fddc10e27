"""Where coroutines meet Deferreds: call anything and get a Deferred back."""

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
