"""Errors of the contacts, groups and optout resources; every one derives from ContactsError."""

from __future__ import annotations

from vxsandbox_core import VxSandboxError


class ContactsError(VxSandboxError):
    """Base of every error these resources raise on purpose."""


class NotFoundError(ContactsError):
    """The contact or group named by a key does not exist."""


class LimitExceededError(ContactsError):
    """Storing a new record would take a tenant past its cap."""

    def __init__(self, what: str, count: int, limit: int) -> None:
        self.what = what
        self.count = count
        self.limit = limit
        super().__init__(f"the sandbox already has {count} {what} and may have at most {limit}")
