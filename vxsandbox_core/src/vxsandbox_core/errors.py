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


class ConfigErrors(ConfigError):
    """Several config errors found in one pass, so an operator fixes them all at once.

    ``errors`` holds each one; the message lists them one per line.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("", "\n".join(str(e) for e in errors))
        self.key = errors[0].key


def split_config_errors(error: ConfigError) -> list[ConfigError]:
    """The single errors a :class:`ConfigError` stands for (itself unless it is a :class:`ConfigErrors`)."""
    return list(error.errors) if isinstance(error, ConfigErrors) else [error]


def raise_config_errors(errors: list[ConfigError]) -> None:
    """Raise nothing for no errors, the error itself for one, a :class:`ConfigErrors` for several."""
    flat = [single for error in errors for single in split_config_errors(error)]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise ConfigErrors(flat)


class ProtocolError(VxSandboxError):
    """A line from a sandboxed child is not a valid sandbox command."""


class MessageError(VxSandboxError):
    """A Vumi message body is not valid: bad JSON, missing or mistyped fields."""
