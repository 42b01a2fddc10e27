"""Shared pieces of the contacts tests: a worker with the three resources driving real children."""

from __future__ import annotations

import uuid
from typing import Any

from vxsandbox_core import SandboxApi
from vxsandbox_core.protocol import Command
from vxsandbox_core.testing import RecordingBroker, hooks_with, make_user_message, python_child, python_worker_config
from vxsandbox_core.worker import Sandbox

from ..resources_kv.helpers import LogRecorder, delete_prefixed, require_redis  # noqa: F401 -- re-exported


class ScriptedSandbox(Sandbox):
    """The generic worker running a :func:`python_child` whose requests each test sets in ``requests``."""

    requests: list[dict[str, Any]] = []

    def sandbox_args(self, api: SandboxApi) -> list[str]:
        return python_child(self.requests)


def unique_prefix() -> str:
    """A key_prefix no other test uses."""
    return f"test-contacts-{uuid.uuid4().hex}"


class ContactsWorkerMixin:
    """Builds a worker with ``contacts``, ``groups`` and ``optout`` resources and runs real children through it.

    Subclasses set :meth:`store_options` (backend-specific options shared by the three).
    """

    def store_options(self) -> dict[str, Any]:
        return {"backend": "memory"}

    async def make_worker(self, plugins: tuple[Any, ...] = (), extra: dict[str, Any] | None = None,
                          **options: Any) -> ScriptedSandbox:
        store = {**self.store_options(), **options}
        common = {k: v for k, v in store.items() if k not in ("delivery_class", "address_type")}
        sandbox = {
            "contacts": {"cls": "contacts", **common,
                         **{k: v for k, v in store.items() if k == "delivery_class"}},
            "groups": {"cls": "groups", **common},
            "optout": {"cls": "optout", **common, **{k: v for k, v in store.items() if k == "address_type"}},
            "log": {"cls": f"{LogRecorder.__module__}:LogRecorder"},
            **(extra or {}),
        }
        config = python_worker_config([], sandbox=sandbox, logging_resource="log", max_pending_requests=1000)
        worker = ScriptedSandbox(config, broker=RecordingBroker(), hooks=hooks_with(*plugins))
        await worker.setup()
        self.addCleanup(worker.teardown)  # type: ignore[attr-defined]
        return worker

    async def run_child(self, worker: ScriptedSandbox, requests: list[dict[str, Any]],
                        sandbox_id: str = "tenant-a", **message: Any) -> list[Command]:
        """Run one real child sending ``requests`` at once as ``sandbox_id``; return the replies it received."""
        worker.requests = requests
        outcome = await worker.process_message(make_user_message(sandbox_id=sandbox_id, **message))
        assert outcome == "ok", outcome
        replies: list[Command] = worker.resources.resources["record"].replies()  # type: ignore[attr-defined]
        assert len(replies) == len(requests) and all(r is not None for r in replies), replies
        return replies

    async def one(self, worker: ScriptedSandbox, cmd: str, sandbox_id: str = "tenant-a", **fields: Any) -> Command:
        """Send one request in its own child (so requests that depend on each other run in order)."""
        [reply] = await self.run_child(worker, [{"cmd": cmd, **fields}], sandbox_id)
        return reply
