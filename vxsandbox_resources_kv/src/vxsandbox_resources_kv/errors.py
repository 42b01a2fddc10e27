"""Errors of the kv resource; every one derives from KVError."""

from __future__ import annotations

from vxsandbox_core import VxSandboxError


class KVError(VxSandboxError):
    """Base of every error the kv resource raises on purpose."""


class BackendUnavailableError(KVError):
    """The key-value store cannot be reached (Redis down, connecting, or too slow to answer)."""


class QuotaExceededError(KVError):
    """Writing a new key would take a sandbox past its hard key limit."""

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(f"the sandbox already has {count} keys and may have at most {limit}")


class NotAnIntegerError(KVError):
    """``incr`` found a stored value that is not a 64-bit integer."""


class IncrementOverflowError(KVError):
    """``incr`` would take a value outside the signed 64-bit range."""
