"""The contacts, groups and optout resources on the in-memory store: every command through a real child."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from vxsandbox_resources_contacts import ContactsResource, GroupsResource, MemoryStore

from .cases import ContactsCommandCases


class MemoryStoreCommandTests(ContactsCommandCases, TestCase):
    """The shared command tests, on ``backend: memory``."""

    def store_options(self) -> dict[str, Any]:
        return {"backend": "memory"}

    def test_resources_of_one_worker_share_one_memory_store(self) -> None:
        """contacts and groups of one worker and key_prefix share their hashes; another worker's do not."""
        worker, other = object.__new__(type("W", (), {})), object.__new__(type("W", (), {}))
        contacts = ContactsResource("contacts", worker, {"cls": "contacts", "backend": "memory"})
        groups = GroupsResource("groups", worker, {"cls": "groups", "backend": "memory"})
        elsewhere = GroupsResource("groups", other, {"cls": "groups", "backend": "memory"})
        assert isinstance(contacts.store, MemoryStore) and isinstance(groups.store, MemoryStore)
        assert contacts.store.hashes is groups.store.hashes
        assert elsewhere.store.hashes is not contacts.store.hashes
