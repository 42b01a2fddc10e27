"""The kv resource on the in-memory backend: every command and error through a real child."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from vxsandbox_resources_kv import MemoryBackend, RedisResource

from .cases import KVCommandCases


class MemoryBackendCommandTests(KVCommandCases, TestCase):
    """The shared command tests, on ``backend: memory``."""

    def kv_options(self) -> dict[str, Any]:
        return {"backend": "memory"}

    def test_memory_backend_is_chosen(self) -> None:
        """backend: memory builds the in-memory backend, which needs no Redis."""
        resource = RedisResource("kv", None, {"cls": "kv", "backend": "memory"})
        assert isinstance(resource.backend, MemoryBackend)
