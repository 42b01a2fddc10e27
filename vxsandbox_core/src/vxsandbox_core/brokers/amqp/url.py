"""AMQP URLs: ``amqp://user:password@host:port/vhost?heartbeat=N``, parsed without loading txamqp.

``vxsandbox check`` validates a config's broker URL with this module alone, so
checking a config never imports (or patches) the AMQP client.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...errors import ConfigError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class AmqpUrl:
    """The parts of an ``amqp://user:password@host:port/vhost?heartbeat=N`` URL."""

    host: str
    port: int
    username: str
    password: str
    vhost: str
    heartbeat: int

    @classmethod
    def parse(cls, url: str, key: str = "amqp.url") -> AmqpUrl:
        """Parse a URL; the vhost is percent-decoded (``%2F`` is ``/``, the default).

        :raises ConfigError: not an ``amqp://`` URL.
        """
        if not isinstance(url, str):
            raise ConfigError(key, f"expected an amqp:// URL string, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            hint = " (TLS is not supported)" if parts.scheme == "amqps" else ""
            raise ConfigError(key, f"expected an amqp:// URL{hint}, got {url!r}")
        try:
            port = parts.port or 5672
        except ValueError:
            raise ConfigError(key, f"bad port in {url!r}") from None
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        heartbeat = 60
        for item in filter(None, parts.query.split("&")):
            name, _, value = item.partition("=")
            if name != "heartbeat" or not value.isdigit():
                raise ConfigError(key, f"unsupported URL option {item!r} in {url!r} (only heartbeat=SECONDS)")
            heartbeat = int(value)
        return cls(parts.hostname or "127.0.0.1", port, unquote(parts.username or "guest"),
                   unquote(parts.password or "guest"), vhost, heartbeat)

    def safe(self) -> str:
        """The URL without its password, for logs."""
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"amqp://{self.username}@{self.host}:{self.port}/{vhost}"
