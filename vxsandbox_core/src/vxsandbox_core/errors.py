"""Errors raised by vxsandbox-core; every one derives from VxSandboxError."""

from __future__ import annotations


class VxSandboxError(Exception):
    """Base of every error vxsandbox-core raises on purpose."""


class ConfigError(VxSandboxError):
    """A config value is missing, of the wrong type or names nothing installed.

    The message always names the config key, the value given and what was
    expected, so an operator can fix the file without reading code.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.detail = message
        super().__init__(f"config key {key!r}: {message}" if key else message)


class ProtocolError(VxSandboxError):
    """A line from a sandboxed child is not a valid sandbox command."""


class MessageError(VxSandboxError):
    """A Vumi message body is not valid: bad JSON, missing or mistyped fields."""
