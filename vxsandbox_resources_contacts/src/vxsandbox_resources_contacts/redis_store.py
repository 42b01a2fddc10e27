"""The Redis store: one hash per tenant and kind, written by Lua scripts so caps and indexes stay exact.

It reuses the kv resource's connection handling (one reconnecting
txredisapi connection, commands failing at once with
``BackendUnavailableError`` while Redis is away, ``command_timeout``), and
its ``redis_manager`` options. Writes that may create a record check the
tenant's cap in the same script as the write, so concurrent requests from
several workers cannot overshoot it; a contact's address index entries are
rewritten from the stored contact in the same script as the contact.
Concurrent updates of one contact are last-writer-wins, as in Vumi Go.
"""

from __future__ import annotations

import json
from typing import Any

from vxsandbox_resources_kv.config import RedisManagerConfig
from vxsandbox_resources_kv.redis_backend import RedisBackend

from .errors import LimitExceededError, NotFoundError
from .keys import ContactsKeyScheme
from .model import ADDRESS_FIELDS
from .store import optout_field

# Lua fragment: ARGV[i] for i >= first are address field names; updates KEYS[2] (address index)
# for contact JSON `text` under key `key`, adding (op 'HSET') or removing own entries (op 'HDEL').
_INDEX = """
local function reindex(text, key, first, add)
  local c = cjson.decode(text)
  for i = first, #ARGV do
    local v = c[ARGV[i]]
    if type(v) == 'string' then
      local entry = ARGV[i] .. ':' .. v
      if add then
        redis.call('HSET', KEYS[2], entry, key)
      elseif redis.call('HGET', KEYS[2], entry) == key then
        redis.call('HDEL', KEYS[2], entry)
      end
    end
  end
end
"""

# KEYS: contacts, index. ARGV: key, JSON, 'new' or 'old', limit, address fields...
# Returns 1, -1 when the tenant is full (with the count), -2 when an 'old' contact is missing.
PUT_CONTACT = _INDEX + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == 'new' then
  local n = redis.call('HLEN', KEYS[1])
  if n >= tonumber(ARGV[4]) then return {-1, n} end
elseif not old then
  return {-2, 0}
else
  reindex(old, ARGV[1], 5, false)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
reindex(ARGV[2], ARGV[1], 5, true)
return {1, 0}
"""

# KEYS: contacts, index. ARGV: index entry, new key, new JSON, limit, address fields...
# Returns {0, JSON} for the existing contact, {1, JSON} when created, {-1, count} when full.
GET_OR_CREATE_CONTACT = _INDEX + """
local key = redis.call('HGET', KEYS[2], ARGV[1])
if key then
  local text = redis.call('HGET', KEYS[1], key)
  if text then return {0, text} end
end
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[4]) then return {-1, n} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
reindex(ARGV[3], ARGV[2], 5, true)
return {1, ARGV[3]}
"""

# KEYS: contacts, index. ARGV: index entry. Returns the contact's JSON or false.
FIND_CONTACT = """
local key = redis.call('HGET', KEYS[2], ARGV[1])
if not key then return false end
return redis.call('HGET', KEYS[1], key)
"""

# KEYS: groups. ARGV: name, new key, new JSON, limit.
# Returns {0, JSON} for the one group of that name, {1, JSON} when created, {-2, n} when n have it,
# {-1, count} when full.
GET_OR_CREATE_GROUP = """
local found = nil
local n = 0
local all = redis.call('HVALS', KEYS[1])
for _, text in ipairs(all) do
  if cjson.decode(text)['name'] == ARGV[1] then
    n = n + 1
    found = text
  end
end
if n == 1 then return {0, found} end
if n > 1 then return {-2, n} end
if #all >= tonumber(ARGV[4]) then return {-1, #all} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return {1, ARGV[3]}
"""

# KEYS: hash. ARGV: field, JSON. Replaces an existing field only; returns 1, or 0 when it is missing.
REPLACE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: hash. ARGV: field, JSON, limit. Returns 1, or {-1, count} when the field is new and the hash full.
PUT_CAPPED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local n = redis.call('HLEN', KEYS[1])
  if n >= tonumber(ARGV[3]) then return {-1, n} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, 0}
"""


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _load(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


class RedisStore(RedisBackend):
    """A :class:`~vxsandbox_resources_contacts.store.ContactsStore` in Redis.

    :param config: the ``redis_manager`` options.
    :param clock: the reactor (used for timeouts).
    """

    def __init__(self, config: RedisManagerConfig, clock: Any) -> None:
        super().__init__(config, clock)
        self.names = ContactsKeyScheme(config.key_prefix)

    def _contact_keys(self, sandbox_id: str) -> list[str]:
        return [self.names.contacts(sandbox_id), self.names.addresses(sandbox_id)]

    async def get_contact(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        return _load(await self._call("hget", lambda r: r.hget(self.names.contacts(sandbox_id), key)))

    async def find_contact(self, sandbox_id: str, field: str, address: str) -> dict[str, Any] | None:
        text = await self._eval("find", FIND_CONTACT, self._contact_keys(sandbox_id), [f"{field}:{address}"])
        return _load(text or None)

    async def get_or_create_contact(self, sandbox_id: str, field: str, address: str, new: dict[str, Any],
                                    limit: int) -> tuple[dict[str, Any], bool]:
        status, value = await self._eval(
            "get_or_create", GET_OR_CREATE_CONTACT, self._contact_keys(sandbox_id),
            [f"{field}:{address}", new["key"], _dump(new), limit, *ADDRESS_FIELDS])
        if status == -1:
            raise LimitExceededError("contacts", int(value), limit)
        contact = _load(value)
        assert contact is not None
        return contact, status == 1

    async def put_contact(self, sandbox_id: str, contact: dict[str, Any], create: bool, limit: int) -> None:
        status, count = await self._eval(
            "put", PUT_CONTACT, self._contact_keys(sandbox_id),
            [contact["key"], _dump(contact), "new" if create else "old", limit, *ADDRESS_FIELDS])
        if status == -1:
            raise LimitExceededError("contacts", int(count), limit)
        if status == -2:
            raise NotFoundError(f"Contact with key {contact['key']!r} not found.")

    async def all_contacts(self, sandbox_id: str) -> list[dict[str, Any]]:
        texts = await self._call("hvals", lambda r: r.hvals(self.names.contacts(sandbox_id)))
        return [json.loads(t) for t in texts or []]

    async def get_group(self, sandbox_id: str, key: str) -> dict[str, Any] | None:
        return _load(await self._call("hget", lambda r: r.hget(self.names.groups(sandbox_id), key)))

    async def all_groups(self, sandbox_id: str) -> list[dict[str, Any]]:
        texts = await self._call("hvals", lambda r: r.hvals(self.names.groups(sandbox_id)))
        return [json.loads(t) for t in texts or []]

    async def get_or_create_group(self, sandbox_id: str, name: str, new: dict[str, Any],
                                  limit: int) -> tuple[dict[str, Any] | None, bool]:
        status, value = await self._eval("get_or_create_by_name", GET_OR_CREATE_GROUP,
                                         [self.names.groups(sandbox_id)], [name, new["key"], _dump(new), limit])
        if status == -1:
            raise LimitExceededError("groups", int(value), limit)
        if status == -2:
            return None, False
        return _load(value), status == 1

    async def update_group(self, sandbox_id: str, group: dict[str, Any]) -> bool:
        return bool(await self._eval("update", REPLACE, [self.names.groups(sandbox_id)],
                                     [group["key"], _dump(group)]))

    async def get_optout(self, sandbox_id: str, address_type: str, address_value: str) -> dict[str, Any] | None:
        field = optout_field(address_type, address_value)
        return _load(await self._call("hget", lambda r: r.hget(self.names.optouts(sandbox_id), field)))

    async def put_optout(self, sandbox_id: str, address_type: str, address_value: str, optout: dict[str, Any],
                         limit: int) -> None:
        status, count = await self._eval("optout", PUT_CAPPED, [self.names.optouts(sandbox_id)],
                                         [optout_field(address_type, address_value), _dump(optout), limit])
        if status == -1:
            raise LimitExceededError("opt-outs", int(count), limit)

    async def delete_optout(self, sandbox_id: str, address_type: str, address_value: str) -> bool:
        field = optout_field(address_type, address_value)
        return bool(await self._call("hdel", lambda r: r.hdel(self.names.optouts(sandbox_id), field)))

    async def count_optouts(self, sandbox_id: str) -> int:
        return int(await self._call("hlen", lambda r: r.hlen(self.names.optouts(sandbox_id))))
