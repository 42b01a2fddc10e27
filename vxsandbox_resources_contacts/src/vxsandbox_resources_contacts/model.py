"""Contacts and groups as Vumi Go handed them to sandboxes: the field set, addresses and search queries.

A contact is stored and returned in Vumi Go's flat shape (``Contact.get_data()``)::

    {"key": "...", "$VERSION": 2, "user_account": "<sandbox_id>", "created_at": "2024-05-01 12:00:00.000000",
     "name": null, "surname": null, "email_address": null, "dob": null, "groups": ["<group key>", ...],
     "msisdn": "+27831234567", "twitter_handle": null, "facebook_id": null, "bbm_pin": null,
     "gtalk_id": null, "mxit_id": null, "wechat_id": null,
     "extras-<name>": "<string>", "subscription-<name>": "<string>"}

vumigo_v02's ``Contact`` folds ``extras-*`` and ``subscription-*`` back into
``extra`` and ``subscription`` objects and sends those on ``save``; both
forms are accepted on the way in. ``user_account`` is the tenant.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from vxsandbox_core import CommandError

#: delivery_class -> the contact field holding that channel's address (Vumi Go's DELIVERY_CLASSES)
DELIVERY_CLASSES: dict[str, str] = {
    "sms": "msisdn",
    "ussd": "msisdn",
    "voice": "msisdn",
    "gtalk": "gtalk_id",
    "mxit": "mxit_id",
    "wechat": "wechat_id",
    "twitter": "twitter_handle",
}

#: address fields, indexed for lookups by address
ADDRESS_FIELDS = ("msisdn", "twitter_handle", "facebook_id", "bbm_pin", "gtalk_id", "mxit_id", "wechat_id")
#: every plain (string or null) field an app may set
STRING_FIELDS = ("name", "surname", "email_address", "dob", "created_at") + ADDRESS_FIELDS
#: fields an app may send but never sets
READ_ONLY_FIELDS = ("key", "$VERSION", "user_account")
EXTRA = "extras-"
SUBSCRIPTION = "subscription-"
CONTACT_VERSION = 2
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def now_timestamp() -> str:
    """The current UTC time in Vumi's timestamp format."""
    return datetime.now(timezone.utc).strftime(TIMESTAMP_FORMAT)


def new_key() -> str:
    """A fresh contact or group key (a UUID in hex, as Vumi Go made them)."""
    return uuid.uuid4().hex


def address_field(delivery_class: Any) -> str:
    """The contact field for ``delivery_class``.

    :raises CommandError: the delivery class is not one Vumi Go knew.
    """
    if not isinstance(delivery_class, str):
        raise CommandError(f"'delivery_class' must be a string (one of {', '.join(DELIVERY_CLASSES)}), "
                           f"got {delivery_class!r}")
    field = DELIVERY_CLASSES.get(delivery_class)
    if field is None:
        raise CommandError(f"Unsupported delivery class {delivery_class!r} "
                           f"(supported: {', '.join(DELIVERY_CLASSES)})")
    return field


def normalize_address(field: str, addr: str) -> str:
    """Canonical form of an address, as vumigo_v02's dummy stores it: msisdns with one leading ``+``,
    gtalk ids without the device part."""
    if field == "msisdn":
        return "+" + addr.lstrip("+")
    if field == "gtalk_id":
        return addr.partition("/")[0]
    return addr


def blank_contact(sandbox_id: str) -> dict[str, Any]:
    """A new contact with every field at its default and a fresh key."""
    contact: dict[str, Any] = {"key": new_key(), "$VERSION": CONTACT_VERSION, "user_account": sandbox_id,
                               "groups": []}
    for field in STRING_FIELDS:
        contact[field] = None
    contact["created_at"] = now_timestamp()
    # vumigo_v02's Contact refuses a contact whose msisdn is not a string; Vumi Go used this placeholder.
    contact["msisdn"] = "unknown"
    return contact


def _string(field: str, value: Any, nullable: bool = True) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise CommandError(f"contact field {field!r} must be a string{' or null' if nullable else ''}, "
                           f"got {value!r}")
    return value


def _string_map(field: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise CommandError(f"contact field {field!r} must be an object of string values, got {value!r}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise CommandError(f"contact field {field!r}: {name!r} must be a string, got {item!r}")
    return value


def _groups(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise CommandError(f"contact field 'groups' must be a list of group keys (strings), got {value!r}")
    return list(dict.fromkeys(value))


def _dynamic(contact: dict[str, Any], prefix: str) -> dict[str, str]:
    return {k[len(prefix):]: v for k, v in contact.items() if k.startswith(prefix)}


def _set_dynamic(contact: dict[str, Any], prefix: str, values: dict[str, str]) -> None:
    for k in [k for k in contact if k.startswith(prefix)]:
        del contact[k]
    for name, value in values.items():
        contact[prefix + name] = value


def apply_fields(contact: dict[str, Any], fields: dict[str, Any], add_groups: bool) -> dict[str, Any]:
    """Set ``fields`` (app-supplied) on a copy of ``contact`` and return it.

    ``extra`` and ``subscription`` objects replace every subfield of their
    kind (as in Vumi Go); ``extras-<name>`` and ``subscription-<name>`` set one.
    ``groups`` are added to the contact's (``add_groups``, Vumi Go's
    ``update``) or replace them. Unknown fields are ignored, as Vumi Go did.

    :raises CommandError: a field has the wrong type.
    """
    result = dict(contact)
    for field, value in fields.items():
        if field in STRING_FIELDS:
            result[field] = _string(field, value, nullable=field != "msisdn")
        elif field == "groups":
            groups = _groups(value)
            result["groups"] = list(dict.fromkeys(result["groups"] + groups)) if add_groups else groups
        elif field == "extra":
            _set_dynamic(result, EXTRA, _string_map(field, value))
        elif field == "subscription":
            _set_dynamic(result, SUBSCRIPTION, _string_map(field, value))
    for field, value in fields.items():
        if field.startswith((EXTRA, SUBSCRIPTION)) and len(field) > field.index("-") + 1:
            result[field] = _string(field, value, nullable=False)
    return result


def merge_dynamic(contact: dict[str, Any], prefix: str, fields: Any) -> dict[str, Any]:
    """Set some ``extras-`` or ``subscription-`` subfields of a copy of ``contact``, keeping the others.

    :raises CommandError: ``fields`` is not an object of strings.
    """
    if not isinstance(fields, dict):
        raise CommandError("'fields' must be an object of field name -> string value")
    result = dict(contact)
    for name, value in fields.items():
        if not isinstance(value, str):
            raise CommandError(f"'fields': {name!r} must be a string, got {value!r}")
        result[prefix + name] = value
    return result


def new_group(sandbox_id: str, name: str) -> dict[str, Any]:
    """A new static group called ``name``, as Vumi Go's ``ContactGroup.get_data()`` shapes it."""
    return {"key": new_key(), "$VERSION": None, "name": name, "query": None, "user_account": sandbox_id,
            "created_at": now_timestamp()}


# --- search -------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:(?P<op>AND|OR|&&|\|\|)(?=\s|$)|(?P<field>[A-Za-z_$][\w$-]*):"""
                    r"""(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>(?:[^\s"\\]|\\.)+)))""")
_UNESCAPE = re.compile(r"\\(.)")

Matcher = Callable[[dict[str, Any]], bool]


def _term(field: str, text: str, wildcard: bool) -> Matcher:
    def values(record: dict[str, Any]) -> list[Any]:
        value = record.get(field)
        return value if isinstance(value, list) else [value]

    if wildcard:
        return lambda record: any(isinstance(v, str) and v.startswith(text) for v in values(record))
    return lambda record: any(v == text for v in values(record))


def parse_query(query: Any) -> Matcher:
    """A predicate for the Lucene-style queries toolkit apps send to ``search``.

    Supported: ``field:value`` terms (``msisdn:+27831234567``, ``extras-lang:"en"``,
    ``groups:<group key>``, ``name:Zo*`` for a prefix), joined by ``AND`` (or
    just spaces) and ``OR``, where AND binds tighter. A backslash escapes the
    next character (``msisdn:\\+2783...``, as Lucene needs for ``+``).

    :raises CommandError: the query is not a string or uses other syntax.
    """
    if not isinstance(query, str):
        raise CommandError(f"'query' must be a string such as 'msisdn:+27831234567', got {query!r}")
    pos = 0
    alternatives: list[list[Matcher]] = [[]]
    expect_term = True
    while pos < len(query.rstrip()):
        m = _TOKEN.match(query, pos)
        if m is None:
            raise CommandError(f"'query' {query!r}: cannot read {query[pos:].strip()!r}; supported are "
                               "field:value terms joined by AND or OR (field:\"quoted value\", field:prefix*)")
        pos = m.end()
        op = m.group("op")
        if op is not None:
            if expect_term:
                raise CommandError(f"'query' {query!r}: {op} must stand between two terms")
            if op in ("OR", "||"):
                alternatives.append([])
            expect_term = True
            continue
        if m.group("quoted") is not None:
            text, wildcard = _UNESCAPE.sub(r"\1", m.group("quoted")), False
        else:
            raw = m.group("bare")
            wildcard = raw.endswith("*") and not raw.endswith("\\*")
            text = _UNESCAPE.sub(r"\1", raw[:-1] if wildcard else raw)
        alternatives[-1].append(_term(m.group("field"), text, wildcard))
        expect_term = False
    if expect_term:
        raise CommandError(f"'query' {query!r} has no complete field:value term at its end" if query.strip()
                           else "'query' must not be empty")
    return lambda record: any(all(t(record) for t in terms) for terms in alternatives)
