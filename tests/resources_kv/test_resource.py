"""The kv resource on the in-memory backend: every command and error through a real child."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from vxsandbox_resources_kv import KVResource, MemoryBackend

from .cases import KVCommandCases


class MemoryBackendCommandTests(KVCommandCases, TestCase):
    """The shared command tests, on ``backend: memory``."""

    def kv_options(self) -> dict[str, Any]:
        return {"backend": "memory"}

    def test_memory_backend_is_chosen(self) -> None:
        """backend: memory builds the in-memory backend, which needs no Redis."""
        resource = KVResource("kv", None, {"cls": "kv", "backend": "memory"})
        assert isinstance(resource.backend, MemoryBackend)


def test_kv_is_named_for_kv_and_old_names_still_resolve():
    """The entry point kv and the old class paths all resolve to KVResource; RedisResource is its alias."""
    from vxsandbox_core.registry import resolve_resource
    from vxsandbox_resources_kv import KVResource, RedisResource
    assert RedisResource is KVResource
    for name in ("kv", "vxsandbox.RedisResource", "vumi.application.sandbox.RedisResource",
                 "vxsandbox_resources_kv:RedisResource"):
        assert resolve_resource(name) is KVResource
