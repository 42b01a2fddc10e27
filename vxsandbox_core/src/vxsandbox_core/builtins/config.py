"""The ``config`` resource: read-only configuration values an app fetches by key.

Values come from the resource's own config, inline (``values``) or from
files (``keys``, as the seed's FileConfigResource). Apps written with
vumigo_v02 ``JSON.parse`` the value of key ``config``, so an inline value
that is not a string is handed over JSON-encoded.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import Field, ResourceConfig, string_map
from ..errors import CommandError, ConfigError
from ..protocol import Command
from ..resources import SandboxResource, describe_type

if TYPE_CHECKING:
    from ..api import SandboxApi


class ConfigResourceConfig(ResourceConfig):
    """Options of the ``config`` resource (under ``sandbox.<name>`` in the worker config)."""

    values: dict[str, Any]
    keys: dict[str, str]

    fields: ClassVar[tuple[Field, ...]] = (
        Field("values", (dict,), "key -> value; a string is returned as it is, anything else JSON-encoded",
              dict),
        Field("keys", (dict,), "key -> path of a file whose text is the value (read once, at startup)",
              dict, string_map),
    )


class ConfigResource(SandboxResource):
    """Resource ``config``: command ``get`` with ``key`` replies with ``value`` (a string).

    A key that is in neither ``values`` nor ``keys`` succeeds with a null
    ``value``, as Vumi Go and the toolkit's dummy config did: toolkit apps
    ask for optional keys (``translation.<lang>`` on every message once a
    user picked a language) and treat null as "not set".
    """

    CONFIG_CLASS = ConfigResourceConfig
    options: ConfigResourceConfig
    # Values are read once, at startup: a child may keep what it was told for a key.
    FIXED = {"get": "key"}

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        prefix = f"sandbox.{name}."
        self.values: dict[str, str] = {}
        for key, value in self.options.values.items():
            if not isinstance(key, str):
                raise ConfigError(prefix + "values", f"keys must be strings, got {key!r}")
            try:
                self.values[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                raise ConfigError(prefix + f"values.{key}", f"cannot be JSON-encoded: {e}") from None
        self.files: dict[str, str] = dict(self.options.keys)

    def setup(self) -> None:
        """Read the files named by ``keys``; a missing or unreadable file stops startup."""
        for key, path in self.files.items():
            try:
                with open(path, encoding="utf-8") as f:
                    self.values[key] = f.read()
            except OSError as e:
                raise ConfigError(f"sandbox.{self.name}.keys.{key}",
                                  f"cannot read {path!r}: {e.strerror or e}") from None

    def handle_get(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the value of ``key``, null when it is not configured."""
        key = command.get("key")
        if not isinstance(key, str):
            raise CommandError(f"'key' must be a string, got {describe_type(key)}")
        return self.reply(command, value=self.values.get(key))
