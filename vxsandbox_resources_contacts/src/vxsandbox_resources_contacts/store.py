"""The interface both stores (Redis and in-memory) offer the three resources.

Records are JSON-able dicts; every write that may create a record takes the
tenant's cap and enforces it atomically with the write. A contact is found
by address through an index the store keeps in step with every write.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .model import ADDRESS_FIELDS


def index_entries(contact: dict[str, Any]) -> list[str]:
    """The address index entries of ``contact``: ``"<field>:<address>"`` for each address it has."""
    return [f"{field}:{contact[field]}" for field in ADDRESS_FIELDS if isinstance(contact.get(field), str)]


def optout_field(address_type: str, address_value: str) -> str:
    """The opt-out hash's field for an address (JSON, so no separator can make two addresses collide)."""
    return json.dumps([address_type, address_value], ensure_ascii=False, separators=(",", ":"))


class ContactsStore(Protocol):
    """Contacts, groups and opt-outs, namespaced by sandbox_id."""

    async def setup(self) -> None:
        """Connect (or prepare) once when the worker starts."""

    async def teardown(self) -> None:
        """Release connections when the worker stops."""

    async def get_contact(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        """The contact with ``key``, or None."""

    async def find_contact(self, sandbox_id: str, field: str, address: str) -> dict[str, Any] | None:
        """The contact whose address ``field`` is ``address`` (the last one written), or None."""

    async def get_or_create_contact(self, sandbox_id: str, field: str, address: str, new: dict[str, Any],
                                    limit: int) -> tuple[dict[str, Any], bool]:
        """The contact with that address, or ``new`` stored now; the bool says it was created.

        :raises LimitExceededError: no contact has the address and the tenant holds ``limit`` contacts.
        """

    async def put_contact(self, sandbox_id: str, contact: dict[str, Any], create: bool, limit: int) -> None:
        """Store ``contact`` under its key: a new one (``create``) or in place of an existing one.

        :raises NotFoundError: not ``create`` and no contact has that key.
        :raises LimitExceededError: ``create`` and the tenant holds ``limit`` contacts.
        """

    async def all_contacts(self, sandbox_id: str) -> list[dict[str, Any]]:
        """Every contact of the tenant."""

    async def get_group(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        """The group with ``key``, or None."""

    async def all_groups(self, sandbox_id: str) -> list[dict[str, Any]]:
        """Every group of the tenant."""

    async def get_or_create_group(self, sandbox_id: str, name: str, new: dict[str, Any],
                                  limit: int) -> tuple[dict[str, Any] | None, bool]:
        """The one group called ``name``, or ``new`` stored now; ``(None, False)`` when several have it.

        :raises LimitExceededError: no group has the name and the tenant holds ``limit`` groups.
        """

    async def update_group(self, sandbox_id: str, group: dict[str, Any]) -> bool:
        """Replace an existing group; False when no group has its key."""

    async def get_optout(self, sandbox_id: str, address_type: str, address_value: str) -> dict[str, Any] | None:
        """The opt-out of an address, or None."""

    async def put_optout(self, sandbox_id: str, address_type: str, address_value: str, optout: dict[str, Any],
                         limit: int) -> None:
        """Record (or replace) the opt-out of an address.

        :raises LimitExceededError: the address has none and the tenant holds ``limit`` opt-outs.
        """

    async def delete_optout(self, sandbox_id: str, address_type: str, address_value: str) -> bool:
        """Remove an address's opt-out; True when there was one."""

    async def count_optouts(self, sandbox_id: str) -> int:
        """How many opt-outs the tenant holds."""
