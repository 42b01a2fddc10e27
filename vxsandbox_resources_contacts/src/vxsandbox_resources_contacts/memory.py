"""The in-memory store: the Redis store's semantics in this worker's memory, for ``vxsandbox chat`` and tests.

The contacts, groups and optout resources of one worker configured with the
same ``key_prefix`` share one set of hashes (:func:`shared_hashes`), as they
would share Redis.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from .errors import LimitExceededError, NotFoundError
from .keys import ContactsKeyScheme
from .store import index_entries, optout_field

Hashes = dict[str, dict[str, str]]

_SHARED: weakref.WeakKeyDictionary[Any, dict[str, Hashes]] = weakref.WeakKeyDictionary()


def shared_hashes(worker: Any, key_prefix: str) -> Hashes:
    """The hashes every memory store of ``worker`` with this ``key_prefix`` uses (new ones without a worker)."""
    if worker is None:
        return {}
    try:
        per_prefix = _SHARED.setdefault(worker, {})
    except TypeError:  # a worker that cannot be weakly referenced keeps its own store per resource
        return {}
    return per_prefix.setdefault(key_prefix, {})


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class MemoryStore:
    """A :class:`~vxsandbox_resources_contacts.store.ContactsStore` in dicts of JSON text."""

    def __init__(self, hashes: Hashes | None = None, scheme: ContactsKeyScheme | None = None) -> None:
        self.hashes: Hashes = {} if hashes is None else hashes
        self.scheme = scheme or ContactsKeyScheme()

    def _hash(self, name: str) -> dict[str, str]:
        return self.hashes.setdefault(name, {})

    async def setup(self) -> None:
        """Nothing to connect."""

    async def teardown(self) -> None:
        """Nothing to release; records live as long as the worker."""

    async def get_contact(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        text = self._hash(self.scheme.contacts(sandbox_id)).get(key)
        return None if text is None else json.loads(text)

    async def find_contact(self, sandbox_id: str, field: str, address: str) -> dict[str, Any] | None:
        key = self._hash(self.scheme.addresses(sandbox_id)).get(f"{field}:{address}")
        return None if key is None else await self.get_contact(sandbox_id, key)

    async def get_or_create_contact(self, sandbox_id: str, field: str, address: str, new: dict[str, Any],
                                    limit: int) -> tuple[dict[str, Any], bool]:
        found = await self.find_contact(sandbox_id, field, address)
        if found is not None:
            return found, False
        await self.put_contact(sandbox_id, new, True, limit)
        return new, True

    async def put_contact(self, sandbox_id: str, contact: dict[str, Any], create: bool, limit: int) -> None:
        contacts = self._hash(self.scheme.contacts(sandbox_id))
        index = self._hash(self.scheme.addresses(sandbox_id))
        key = contact["key"]
        old = contacts.get(key)
        if create:
            if len(contacts) >= limit:
                raise LimitExceededError("contacts", len(contacts), limit)
        else:
            if old is None:
                raise NotFoundError(f"Contact with key {key!r} not found.")
            for entry in index_entries(json.loads(old)):
                if index.get(entry) == key:
                    del index[entry]
        contacts[key] = _dump(contact)
        for entry in index_entries(contact):
            index[entry] = key

    async def all_contacts(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self._hash(self.scheme.contacts(sandbox_id)).values()]

    async def get_group(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        text = self._hash(self.scheme.groups(sandbox_id)).get(key)
        return None if text is None else json.loads(text)

    async def all_groups(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self._hash(self.scheme.groups(sandbox_id)).values()]

    async def get_or_create_group(self, sandbox_id: str, name: str, new: dict[str, Any],
                                  limit: int) -> tuple[dict[str, Any] | None, bool]:
        groups = self._hash(self.scheme.groups(sandbox_id))
        named = [g for g in map(json.loads, groups.values()) if g.get("name") == name]
        if len(named) > 1:
            return None, False
        if named:
            return named[0], False
        if len(groups) >= limit:
            raise LimitExceededError("groups", len(groups), limit)
        groups[new["key"]] = _dump(new)
        return new, True

    async def update_group(self, sandbox_id: str, group: dict[str, Any]) -> bool:
        groups = self._hash(self.scheme.groups(sandbox_id))
        if group["key"] not in groups:
            return False
        groups[group["key"]] = _dump(group)
        return True

    async def get_optout(self, sandbox_id: str, address_type: str, address_value: str) -> dict[str, Any] | None:
        text = self._hash(self.scheme.optouts(sandbox_id)).get(optout_field(address_type, address_value))
        return None if text is None else json.loads(text)

    async def put_optout(self, sandbox_id: str, address_type: str, address_value: str, optout: dict[str, Any],
                         limit: int) -> None:
        optouts = self._hash(self.scheme.optouts(sandbox_id))
        field = optout_field(address_type, address_value)
        if field not in optouts and len(optouts) >= limit:
            raise LimitExceededError("opt-outs", len(optouts), limit)
        optouts[field] = _dump(optout)

    async def delete_optout(self, sandbox_id: str, address_type: str, address_value: str) -> bool:
        optouts = self._hash(self.scheme.optouts(sandbox_id))
        return optouts.pop(optout_field(address_type, address_value), None) is not None

    async def count_optouts(self, sandbox_id: str) -> int:
        return len(self._hash(self.scheme.optouts(sandbox_id)))
