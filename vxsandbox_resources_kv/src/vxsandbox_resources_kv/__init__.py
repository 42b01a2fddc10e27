"""vxsandbox-resources-kv: the ``kv`` resource, per-sandbox key-value storage in Redis or in memory."""

from .backend import KVBackend, WriteResult
from .config import KVConfig, RedisManagerConfig
from .errors import (
    BackendUnavailableError,
    IncrementOverflowError,
    KVError,
    NotAnIntegerError,
    QuotaExceededError,
)
from .keys import KeyScheme
from .memory import MemoryBackend
from .redis_backend import RedisBackend
from .resource import KVResource, RedisResource

__version__ = "1.4.2"

__all__ = [
    "BackendUnavailableError",
    "IncrementOverflowError",
    "KVBackend",
    "KVConfig",
    "KVError",
    "KVResource",
    "KeyScheme",
    "MemoryBackend",
    "NotAnIntegerError",
    "QuotaExceededError",
    "RedisBackend",
    "RedisManagerConfig",
    "RedisResource",
    "WriteResult",
    "__version__",
]
