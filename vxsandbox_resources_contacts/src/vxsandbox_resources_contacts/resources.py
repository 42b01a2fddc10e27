"""The ``contacts``, ``groups`` and ``optout`` resources, with Vumi Go's commands and reply shapes.

Every failure is a reply with ``success: false`` and a ``reason`` (Vumi Go's
wording where the toolkit or apps may look for it, e.g. ``Contact not
found``, ``Group not found``, ``Multiple groups found``); only a command
that does not exist kills the sandbox, as for every resource.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from vxsandbox_core import CommandError, SandboxResource
from vxsandbox_core.protocol import Command
from vxsandbox_resources_kv import BackendUnavailableError

from . import model
from .config import ContactsConfig, GroupsConfig, OptoutConfig, StoreConfig
from .errors import LimitExceededError, NotFoundError
from .keys import ContactsKeyScheme
from .memory import MemoryStore, shared_hashes
from .redis_store import RedisStore
from .store import ContactsStore

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi


class _StoreResource(SandboxResource):
    """A resource backed by a :class:`ContactsStore` built from its config."""

    CONFIG_CLASS: type[StoreConfig] = StoreConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.options = self.CONFIG_CLASS(config, prefix=f"sandbox.{name}.")
        clock = getattr(worker, "reactor", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self.store: ContactsStore
        if self.options.backend == "memory":
            key_prefix = self.options.redis.key_prefix
            self.store = MemoryStore(shared_hashes(worker, key_prefix), ContactsKeyScheme(key_prefix))
        else:
            self.store = RedisStore(self.options.redis, clock)

    async def setup(self) -> None:
        """Connect the store; one connection serves every sandbox run."""
        await self.store.setup()

    async def teardown(self) -> None:
        """Close the store's connections."""
        await self.store.teardown()

    def dispatch_request(self, api: SandboxApi, command: Command) -> Any:
        d = super().dispatch_request(api, command)
        return d.addErrback(self._store_failure, command)

    def _store_failure(self, failure: Any, command: Command) -> Command:
        if failure.check(BackendUnavailableError):
            return self.reply_error(command, f"{self.name} store unavailable: {failure.value}")
        if failure.check(NotFoundError):
            return self.reply_error(command, str(failure.value))
        if failure.check(LimitExceededError):
            e = failure.value
            field = {"contacts": "max_contacts", "groups": "max_groups"}.get(e.what, "max_optouts")
            return self.reply_error(command, f"Too many {e.what}: {e} ({field})")
        return failure  # type: ignore[no-any-return]

    def report_limit(self, api: SandboxApi, e: LimitExceededError) -> None:
        api.report(f"{self.name}: {e}", logging.WARNING)


def _required_string(command: Command, field: str, what: str) -> str:
    value = command.get(field)
    if not isinstance(value, str):
        got = "nothing" if field not in command else repr(value)
        raise CommandError(f"'{field}' needs to be specified and be a string ({what}), got {got}")
    return value


class ContactsResource(_StoreResource):
    """Vumi Go's ``contacts`` resource: one tenant's address book, found by address or key, searchable.

    Options are those of :class:`~vxsandbox_resources_contacts.config.ContactsConfig`.
    """

    CONFIG_CLASS = ContactsConfig
    options: ContactsConfig

    def _address(self, command: Command) -> tuple[str, str]:
        addr = _required_string(command, "addr", "the address to look up")
        field = model.address_field(command.get("delivery_class", self.options.delivery_class))
        return field, model.normalize_address(field, addr)

    def _checked(self, contact: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(contact, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > self.options.max_contact_size:
            raise CommandError(f"the contact would be {size} bytes as JSON; the limit is "
                               f"{self.options.max_contact_size} bytes (max_contact_size)")
        return contact

    async def _existing(self, api: SandboxApi, key: Any) -> dict[str, Any]:
        if not isinstance(key, str):
            raise CommandError(f"'key' needs to be specified and be a string (the contact's key), got {key!r}")
        contact = await self.store.get_contact(api.sandbox_id, key)
        if contact is None:
            raise CommandError("Contact not found")
        return contact

    async def _put(self, api: SandboxApi, contact: dict[str, Any], create: bool) -> None:
        try:
            await self.store.put_contact(api.sandbox_id, self._checked(contact), create, self.options.max_contacts)
        except LimitExceededError as e:
            self.report_limit(api, e)
            raise
        except NotFoundError:
            raise CommandError("Contact not found") from None

    async def handle_get(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``contact`` whose address for ``delivery_class`` (default from config) is ``addr``."""
        field, addr = self._address(command)
        contact = await self.store.find_contact(api.sandbox_id, field, addr)
        if contact is None:
            raise CommandError("Contact not found")
        return self.reply(command, contact=contact)

    async def handle_get_or_create(self, api: SandboxApi, command: Command) -> Command:
        """As ``get``, creating the contact when there is none; ``created`` says which happened."""
        field, addr = self._address(command)
        new = model.blank_contact(api.sandbox_id)
        new[field] = addr
        try:
            contact, created = await self.store.get_or_create_contact(api.sandbox_id, field, addr, new,
                                                                      self.options.max_contacts)
        except LimitExceededError as e:
            self.report_limit(api, e)
            raise
        return self.reply(command, created=created, contact=contact)

    async def handle_get_by_key(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``contact`` whose key is ``key``."""
        if "key" not in command:
            raise CommandError("Expected 'key' field in request")
        return self.reply(command, contact=await self._existing(api, command["key"]))

    async def handle_new(self, api: SandboxApi, command: Command) -> Command:
        """Create a contact from the fields in ``contact`` (groups, extra, subscription included)."""
        fields = command.get("contact")
        if not isinstance(fields, dict):
            raise CommandError("'contact' needs to be specified and be an object of field name-value pairs")
        contact = model.apply_fields(model.blank_contact(api.sandbox_id), fields, add_groups=False)
        await self._put(api, contact, create=True)
        return self.reply(command, contact=contact)

    async def handle_save(self, api: SandboxApi, command: Command) -> Command:
        """Replace every field of the existing contact ``contact.key`` with those in ``contact``."""
        fields = command.get("contact")
        if not isinstance(fields, dict):
            raise CommandError("'contact' needs to be specified and be an object of field name-value pairs")
        if not isinstance(fields.get("key"), str):
            raise CommandError("'key' needs to be specified as a field in 'contact' and be a string")
        old = await self._existing(api, fields["key"])
        base = model.blank_contact(api.sandbox_id)
        base.update(key=old["key"], created_at=old["created_at"])
        contact = model.apply_fields(base, fields, add_groups=False)
        await self._put(api, contact, create=False)
        return self.reply(command, contact=contact)

    async def handle_update(self, api: SandboxApi, command: Command) -> Command:
        """Set the contact fields in ``fields`` on contact ``key``; ``groups`` are added to its groups."""
        fields = command.get("fields")
        if not isinstance(fields, dict):
            raise CommandError("'fields' needs to be specified and be an object of field name-value pairs")
        contact = model.apply_fields(await self._existing(api, command.get("key")), fields, add_groups=True)
        await self._put(api, contact, create=False)
        return self.reply(command, contact=contact)

    async def handle_update_extras(self, api: SandboxApi, command: Command) -> Command:
        """Set some of contact ``key``'s extras (``fields``: name -> string), keeping the others."""
        return await self._update_dynamic(api, command, model.EXTRA)

    async def handle_update_subscriptions(self, api: SandboxApi, command: Command) -> Command:
        """Set some of contact ``key``'s subscriptions (``fields``: name -> string), keeping the others."""
        return await self._update_dynamic(api, command, model.SUBSCRIPTION)

    async def _update_dynamic(self, api: SandboxApi, command: Command, prefix: str) -> Command:
        old = await self._existing(api, command.get("key"))
        contact = model.merge_dynamic(old, prefix, command.get("fields"))
        await self._put(api, contact, create=False)
        return self.reply(command, contact=contact)

    async def handle_search(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``keys`` of the contacts matching ``query``, at most ``max_keys`` when given."""
        if "query" not in command:
            raise CommandError("Expected 'query' field in request")
        matches = model.parse_query(command["query"])
        max_keys = command.get("max_keys")
        if "max_keys" in command and (type(max_keys) is not int or max_keys < 0):
            raise CommandError("Value for parameter 'max_keys' is invalid (expected a non-negative integer)")
        contacts = await self.store.all_contacts(api.sandbox_id)
        keys = sorted(c["key"] for c in contacts if matches(c))
        return self.reply(command, keys=keys if max_keys is None else keys[:max_keys])


class GroupsResource(_StoreResource):
    """Vumi Go's ``groups`` resource: named groups of contacts, static or defined by a search query.

    Options are those of :class:`~vxsandbox_resources_contacts.config.GroupsConfig`.
    """

    CONFIG_CLASS = GroupsConfig

    async def _group(self, api: SandboxApi, command: Command) -> dict[str, Any]:
        key = _required_string(command, "key", "the group's key")
        group = await self.store.get_group(api.sandbox_id, key)
        if group is None:
            raise CommandError("Group not found")
        return group

    async def handle_get(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``group`` whose key is ``key``."""
        return self.reply(command, group=await self._group(api, command))

    async def handle_get_by_name(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the one ``group`` called ``name``."""
        name = _required_string(command, "name", "the group's name")
        named = [g for g in await self.store.all_groups(api.sandbox_id) if g.get("name") == name]
        if not named:
            raise CommandError("Group not found")
        if len(named) > 1:
            raise CommandError("Multiple groups found")
        return self.reply(command, group=named[0])

    async def handle_get_or_create_by_name(self, api: SandboxApi, command: Command) -> Command:
        """As ``get_by_name``, creating the group when there is none; ``created`` says which happened."""
        name = _required_string(command, "name", "the group's name")
        try:
            group, created = await self.store.get_or_create_group(
                api.sandbox_id, name, model.new_group(api.sandbox_id, name), self.options.max_groups)
        except LimitExceededError as e:
            self.report_limit(api, e)
            raise
        if group is None:
            raise CommandError("Multiple groups found")
        return self.reply(command, created=created, group=group)

    async def handle_update(self, api: SandboxApi, command: Command) -> Command:
        """Set group ``key``'s ``name`` and ``query`` (null or absent: a static group)."""
        group = await self._group(api, command)
        name = _required_string(command, "name", "the group's new name")
        query = command.get("query")
        if query is not None:
            model.parse_query(query)
        group = dict(group, name=name, query=query)
        if not await self.store.update_group(api.sandbox_id, group):
            raise CommandError("Group not found")
        return self.reply(command, group=group)

    async def handle_search(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``groups`` matching ``query`` (e.g. ``name:"Tea lovers"``)."""
        if "query" not in command:
            raise CommandError("Expected 'query' field in request")
        matches = model.parse_query(command["query"])
        groups = [g for g in await self.store.all_groups(api.sandbox_id) if matches(g)]
        return self.reply(command, groups=sorted(groups, key=lambda g: (g["name"], g["key"])))

    async def handle_list(self, api: SandboxApi, command: Command) -> Command:
        """Reply with every ``groups`` of the tenant, sorted by name."""
        groups = await self.store.all_groups(api.sandbox_id)
        return self.reply(command, groups=sorted(groups, key=lambda g: (g["name"], g["key"])))

    async def handle_count_members(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``count`` of group ``key``'s members (its query's matches for a smart group)."""
        group = await self._group(api, command)
        if isinstance(group.get("query"), str):
            matches = model.parse_query(group["query"])
        else:
            key = group["key"]

            def matches(contact: dict[str, Any]) -> bool:
                return key in contact.get("groups", [])

        contacts = await self.store.all_contacts(api.sandbox_id)
        return self.reply(command, count=sum(1 for c in contacts if matches(c)), group=group)


class OptoutResource(_StoreResource):
    """Vumi Go's ``optout`` resource: addresses that asked not to be sent messages.

    An installed plugin (:mod:`vxsandbox_resources_contacts.policy`) makes
    ``outbound.send_to`` refuse an address opted out here. Options are those
    of :class:`~vxsandbox_resources_contacts.config.OptoutConfig`.
    """

    CONFIG_CLASS = OptoutConfig
    options: OptoutConfig

    @staticmethod
    def _params(command: Command, *names: str) -> list[str]:
        values = []
        for name in names:
            if name not in command:
                raise CommandError(f"Missing key: {name}")
            value = command[name]
            if not value or not isinstance(value, str):
                raise CommandError(f'Invalid value {json.dumps(value)} for "{name}" (expected a non-empty string)')
            values.append(value)
        return values

    async def is_opted_out(self, sandbox_id: str, address_value: str) -> bool:
        """Whether ``address_value`` (of the configured ``address_type``) opted out of ``sandbox_id``."""
        return await self.store.get_optout(sandbox_id, self.options.address_type, address_value) is not None

    async def handle_status(self, api: SandboxApi, command: Command) -> Command:
        """Reply whether ``address_type``/``address_value`` is ``opted_out`` (with when and why if so)."""
        address_type, address_value = self._params(command, "address_type", "address_value")
        optout = await self.store.get_optout(api.sandbox_id, address_type, address_value)
        if optout is None:
            return self.reply(command, opted_out=False)
        return self.reply(command, opted_out=True, created_at=optout["created_at"], message_id=optout["message_id"])

    async def handle_count(self, api: SandboxApi, command: Command) -> Command:
        """Reply with the ``count`` of the tenant's opt-outs."""
        return self.reply(command, count=await self.store.count_optouts(api.sandbox_id))

    async def handle_optout(self, api: SandboxApi, command: Command) -> Command:
        """Opt out ``address_type``/``address_value``, recording the ``message_id`` that asked for it."""
        address_type, address_value, message_id = self._params(command, "address_type", "address_value",
                                                               "message_id")
        optout = {"created_at": model.now_timestamp(), "message_id": message_id}
        try:
            await self.store.put_optout(api.sandbox_id, address_type, address_value, optout,
                                        self.options.max_optouts)
        except LimitExceededError as e:
            self.report_limit(api, e)
            raise
        return self.reply(command, opted_out=True, **optout)

    async def handle_cancel_optout(self, api: SandboxApi, command: Command) -> Command:
        """Cancel the opt-out of ``address_type``/``address_value`` (opt it back in)."""
        address_type, address_value = self._params(command, "address_type", "address_value")
        await self.store.delete_optout(api.sandbox_id, address_type, address_value)
        return self.reply(command, opted_out=False)
