"""The store's names: one hash per tenant and kind, named as injectively as the kv resource's keys.

The sandbox_id is escaped with the kv resource's :func:`escape_sandbox_id`
and ends the name, so two tenants never share a name, and each tag differs
from the others and from kv's (``sandboxes#``, ``sandbox-keys#``) before
the sandbox_id starts::

    <key_prefix>:contacts#<escaped sandbox_id>          hash: contact key -> contact (JSON)
    <key_prefix>:contacts-addr#<escaped sandbox_id>     hash: "<address field>:<address>" -> contact key
    <key_prefix>:contact-groups#<escaped sandbox_id>    hash: group key -> group (JSON)
    <key_prefix>:optouts#<escaped sandbox_id>           hash: JSON [address_type, address_value] -> opt-out (JSON)
"""

from __future__ import annotations

from vxsandbox_resources_kv.keys import escape_sandbox_id

CONTACTS_TAG = "contacts#"
ADDRESSES_TAG = "contacts-addr#"
GROUPS_TAG = "contact-groups#"
OPTOUTS_TAG = "optouts#"


class ContactsKeyScheme:
    """Builds the store's names for one key_prefix (followed by ``:`` when not empty, as in kv)."""

    def __init__(self, key_prefix: str = "") -> None:
        self.prefix = f"{key_prefix}:" if key_prefix else ""

    def _name(self, tag: str, sandbox_id: str) -> str:
        return f"{self.prefix}{tag}{escape_sandbox_id(sandbox_id)}"

    def contacts(self, sandbox_id: str) -> str:
        """The hash of ``sandbox_id``'s contacts."""
        return self._name(CONTACTS_TAG, sandbox_id)

    def addresses(self, sandbox_id: str) -> str:
        """The hash indexing ``sandbox_id``'s contacts by address."""
        return self._name(ADDRESSES_TAG, sandbox_id)

    def groups(self, sandbox_id: str) -> str:
        """The hash of ``sandbox_id``'s groups."""
        return self._name(GROUPS_TAG, sandbox_id)

    def optouts(self, sandbox_id: str) -> str:
        """The hash of ``sandbox_id``'s opt-outs."""
        return self._name(OPTOUTS_TAG, sandbox_id)
