"""Options of the contacts, groups and optout resources: backend, Redis connection and per-tenant caps.

The three resources take the same store options; give them the same
``backend`` and ``redis_manager`` so they see one store (``groups.count_members``
counts the contacts resource's contacts).
"""

from __future__ import annotations

from typing import Any, ClassVar

from vxsandbox_core import Field, ResourceConfig
from vxsandbox_core.config import positive
from vxsandbox_resources_kv.config import RedisManagerConfig, backend_name

from .model import DELIVERY_CLASSES

KiB = 1024


def _delivery_class(value: str) -> str:
    if value not in DELIVERY_CLASSES:
        raise ValueError(f"expected one of {', '.join(DELIVERY_CLASSES)}")
    return value


def _address_type(value: str) -> str:
    if not value:
        raise ValueError("expected a non-empty address type such as 'msisdn'")
    return value


class StoreConfig(ResourceConfig):
    """Options every resource of this distribution takes (the mapping under ``sandbox.<name>``)."""

    backend: str
    redis_manager: dict[str, Any]
    max_contacts: int
    max_groups: int
    max_optouts: int
    max_contact_size: int

    fields: ClassVar[tuple[Field, ...]] = (
        Field("backend", (str,), "where records live: 'redis' (shared, durable) or 'memory' (this worker only)",
              "redis", backend_name),
        Field("redis_manager", (dict,), "Redis connection, as the kv resource's: {url, key_prefix, "
              "connect_timeout, command_timeout, reconnect_max_delay}", dict),
        Field("max_contacts", (int,), "most contacts one sandbox_id may hold; creating one past it fails "
              "with 'Too many contacts'", 10000, positive),
        Field("max_groups", (int,), "most groups one sandbox_id may hold", 1000, positive),
        Field("max_optouts", (int,), "most opt-outs one sandbox_id may hold", 100000, positive),
        Field("max_contact_size", (int,), "most bytes in one contact, serialised as JSON", 64 * KiB,
              positive),
    )

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "") -> None:
        super().__init__(raw, prefix)
        self.redis = RedisManagerConfig(self.redis_manager, prefix + "redis_manager.")


class ContactsConfig(StoreConfig):
    """Config of the ``contacts`` resource."""

    delivery_class: str

    fields = (
        Field("cls", (str,), "the resource class: contacts", "contacts"),
        Field("delivery_class", (str,), "delivery class of get and get_or_create requests that name none "
              f"({', '.join(DELIVERY_CLASSES)})", "ussd", _delivery_class),
    )


class GroupsConfig(StoreConfig):
    """Config of the ``groups`` resource."""

    fields = (Field("cls", (str,), "the resource class: groups", "groups"),)


class OptoutConfig(StoreConfig):
    """Config of the ``optout`` resource."""

    address_type: str

    fields = (
        Field("cls", (str,), "the resource class: optout", "optout"),
        Field("address_type", (str,), "address_type under which outbound send_to checks its to_addr "
              "for an opt-out", "msisdn", _address_type),
    )
