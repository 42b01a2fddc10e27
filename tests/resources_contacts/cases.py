"""Tests of the contacts, groups and optout commands shared by both stores: each store's module runs them all.

Every request travels through a real child process and the generic worker,
as a sandbox would send it; reply shapes are checked against what
vumigo_v02's ContactStore and GroupStore read (and its Contact and Group
models validate).
"""

from __future__ import annotations

import logging
from typing import Any

from vxsandbox_core.testing import RecordingResource
from vxsandbox_resources_contacts import policy

from ..resources_kv.helpers import warnings_in
from .helpers import ContactsWorkerMixin

#: the fields of every contact Vumi Go's get_data() returned (plus extras-* and subscription-*)
CONTACT_FIELDS = {"key", "$VERSION", "user_account", "created_at", "name", "surname", "email_address", "dob",
                  "groups", "msisdn", "twitter_handle", "facebook_id", "bbm_pin", "gtalk_id", "mxit_id",
                  "wechat_id"}
GROUP_FIELDS = {"key", "$VERSION", "name", "query", "user_account", "created_at"}


def assert_toolkit_contact(contact: dict[str, Any]) -> None:
    """What vumigo_v02's Contact.do.validate demands of a contact it is handed."""
    assert CONTACT_FIELDS <= set(contact), contact
    assert set(contact) - CONTACT_FIELDS <= {k for k in contact if k.startswith(("extras-", "subscription-"))}
    assert isinstance(contact["key"], str) and isinstance(contact["user_account"], str)
    assert isinstance(contact["msisdn"], str)
    assert all(isinstance(g, str) for g in contact["groups"])
    assert all(isinstance(v, str) for k, v in contact.items() if k.startswith(("extras-", "subscription-")))


def assert_toolkit_group(group: dict[str, Any]) -> None:
    """What vumigo_v02's Group.do.validate demands of a group it is handed."""
    assert set(group) == GROUP_FIELDS, group
    assert isinstance(group["key"], str) and isinstance(group["user_account"], str)
    assert isinstance(group["name"], str) and (group["query"] is None or isinstance(group["query"], str))


class ContactsCommandCases(ContactsWorkerMixin):
    """Every command and error reply of the three resources; mixed into a trial TestCase per store."""

    # --- contacts -----------------------------------------------------------------------

    async def test_get_or_create_then_get_by_address_and_key(self) -> None:
        """get_or_create makes a full Go-shaped contact for a normalised msisdn; get and get_by_key find it."""
        worker = await self.make_worker()
        created = await self.one(worker, "contacts.get_or_create", addr="27831234567", delivery_class="ussd")
        assert created["success"] is True and created["created"] is True, created
        contact = created["contact"]
        assert_toolkit_contact(contact)
        assert contact["msisdn"] == "+27831234567" and contact["user_account"] == "tenant-a"
        assert contact["$VERSION"] == 2 and contact["groups"] == [] and contact["name"] is None
        replies = await self.run_child(worker, [
            {"cmd": "contacts.get_or_create", "addr": "+27831234567"},
            {"cmd": "contacts.get", "addr": "+27831234567", "delivery_class": "sms"},
            {"cmd": "contacts.get_by_key", "key": contact["key"]},
        ])
        assert replies[0]["created"] is False and replies[0]["contact"] == contact
        assert replies[1]["contact"] == contact and replies[2]["contact"] == contact

    async def test_delivery_class_picks_the_address_field(self) -> None:
        """twitter, gtalk (without its /device), mxit and wechat find their own fields; the config default applies."""
        worker = await self.make_worker(delivery_class="twitter")
        replies = await self.run_child(worker, [
            {"cmd": "contacts.get_or_create", "addr": "@tea"},
            {"cmd": "contacts.get_or_create", "addr": "zoe@example.org/phone", "delivery_class": "gtalk"},
            {"cmd": "contacts.get_or_create", "addr": "m1", "delivery_class": "mxit"},
            {"cmd": "contacts.get_or_create", "addr": "w1", "delivery_class": "wechat"},
        ])
        assert [r["contact"]["twitter_handle"] for r in replies] == ["@tea", None, None, None]
        assert replies[1]["contact"]["gtalk_id"] == "zoe@example.org"
        assert replies[2]["contact"]["mxit_id"] == "m1" and replies[3]["contact"]["wechat_id"] == "w1"
        assert all(r["contact"]["msisdn"] == "unknown" for r in replies)
        again = await self.one(worker, "contacts.get", addr="zoe@example.org/laptop", delivery_class="gtalk")
        assert again["contact"]["key"] == replies[1]["contact"]["key"]

    async def test_get_failures_are_replies_with_reasons(self) -> None:
        """A missing contact, a bad delivery class or a missing addr fail with a reason; the sandbox lives on."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "contacts.get", "addr": "+27000000000"},
            {"cmd": "contacts.get", "addr": "+27000000000", "delivery_class": "pigeon"},
            {"cmd": "contacts.get_or_create"},
            {"cmd": "contacts.get_by_key", "key": "nope"},
            {"cmd": "contacts.get_by_key"},
            {"cmd": "contacts.get_or_create", "addr": "+27000000000", "delivery_class": 5},
        ])
        assert [r["success"] for r in replies] == [False] * 6
        assert replies[0]["reason"] == "Contact not found"
        assert "Unsupported delivery class 'pigeon'" in replies[1]["reason"]
        assert "'addr'" in replies[2]["reason"]
        assert replies[3]["reason"] == "Contact not found"
        assert replies[4]["reason"] == "Expected 'key' field in request"
        assert "'delivery_class'" in replies[5]["reason"]

    async def test_new_takes_groups_extras_and_subscriptions(self) -> None:
        """new accepts extra/subscription objects and flat extras-*; the reply is flat as in Go."""
        worker = await self.make_worker()
        reply = await self.one(worker, "contacts.new", contact={
            "name": "Zoë", "msisdn": "+27831234567", "groups": ["g1", "g1", "g2"], "extra": {"lang": "en"},
            "subscription": {"news": "daily"}, "extras-city": "CPT", "unknown_field": "ignored"})
        contact = reply["contact"]
        assert_toolkit_contact(contact)
        assert contact["name"] == "Zoë" and contact["groups"] == ["g1", "g2"]
        assert contact["extras-lang"] == "en" and contact["extras-city"] == "CPT"
        assert contact["subscription-news"] == "daily" and "unknown_field" not in contact
        stored = await self.one(worker, "contacts.get_by_key", key=contact["key"])
        assert stored["contact"] == contact

    async def test_new_refuses_bad_field_types(self) -> None:
        """A non-string extra, a non-list of groups or a null msisdn fail, naming the field."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "contacts.new", "contact": {"extra": {"age": 5}}},
            {"cmd": "contacts.new", "contact": {"groups": "g1"}},
            {"cmd": "contacts.new", "contact": {"msisdn": None}},
            {"cmd": "contacts.new", "contact": "x"},
        ])
        assert [r["success"] for r in replies] == [False] * 4
        assert "'age'" in replies[0]["reason"] and "'groups'" in replies[1]["reason"]
        assert "'msisdn'" in replies[2]["reason"] and "'contact'" in replies[3]["reason"]

    async def test_save_replaces_the_contact_as_the_toolkit_sends_it(self) -> None:
        """save with a toolkit-shaped contact (extra object, $VERSION) replaces extras and groups, keeps created_at."""
        worker = await self.make_worker()
        old = (await self.one(worker, "contacts.new", contact={
            "msisdn": "+27831234567", "groups": ["g1"], "extra": {"lang": "en", "city": "CPT"}}))["contact"]
        toolkit = {k: v for k, v in old.items() if not k.startswith("extras-")}
        toolkit.update(extra={"lang": "fr"}, groups=["g2"], subscription={}, name="Zoë", msisdn="+27830000000")
        saved = (await self.one(worker, "contacts.save", contact=toolkit))["contact"]
        assert_toolkit_contact(saved)
        assert saved["key"] == old["key"] and saved["created_at"] == old["created_at"]
        assert saved["extras-lang"] == "fr" and "extras-city" not in saved and saved["groups"] == ["g2"]
        replies = await self.run_child(worker, [
            {"cmd": "contacts.get", "addr": "+27830000000"},
            {"cmd": "contacts.get", "addr": "+27831234567"},
            {"cmd": "contacts.save", "contact": {"key": "missing", "msisdn": "+1"}},
            {"cmd": "contacts.save", "contact": {"msisdn": "+1"}},
        ])
        assert replies[0]["contact"] == saved
        assert replies[1]["reason"] == "Contact not found"  # the old address left the index
        assert replies[2]["reason"] == "Contact not found"
        assert "'key'" in replies[3]["reason"]

    async def test_update_adds_groups_and_replaces_extra(self) -> None:
        """update sets fields, adds groups to the contact's, and an extra object replaces every extra (as Go)."""
        worker = await self.make_worker()
        old = (await self.one(worker, "contacts.new", contact={
            "msisdn": "+27831234567", "groups": ["a", "b"], "extra": {"x": "1", "y": "2"}}))["contact"]
        reply = await self.one(worker, "contacts.update", key=old["key"], fields={
            "surname": "Jackal", "groups": ["a", "c"], "extra": {"z": "3"}})
        contact = reply["contact"]
        assert contact["surname"] == "Jackal" and contact["groups"] == ["a", "b", "c"]
        assert contact["extras-z"] == "3" and "extras-x" not in contact
        replies = await self.run_child(worker, [
            {"cmd": "contacts.update", "key": "missing", "fields": {}},
            {"cmd": "contacts.update", "key": old["key"], "fields": 2},
        ])
        assert replies[0]["reason"] == "Contact not found" and "'fields'" in replies[1]["reason"]

    async def test_update_extras_and_subscriptions_merge(self) -> None:
        """update_extras and update_subscriptions set some subfields and keep the others."""
        worker = await self.make_worker()
        old = (await self.one(worker, "contacts.new", contact={
            "msisdn": "+1", "extra": {"a": "1", "b": "2"}, "subscription": {"s": "on"}}))["contact"]
        extras = (await self.one(worker, "contacts.update_extras", key=old["key"],
                                 fields={"a": "one", "c": "three"}))["contact"]
        assert (extras["extras-a"], extras["extras-b"], extras["extras-c"]) == ("one", "2", "three")
        subs = (await self.one(worker, "contacts.update_subscriptions", key=old["key"],
                               fields={"t": "off"}))["contact"]
        assert (subs["subscription-s"], subs["subscription-t"], subs["extras-c"]) == ("on", "off", "three")
        replies = await self.run_child(worker, [
            {"cmd": "contacts.update_extras", "key": old["key"], "fields": {"n": 1}},
            {"cmd": "contacts.update_extras", "key": "missing", "fields": {}},
            {"cmd": "contacts.update_subscriptions", "key": old["key"], "fields": []},
        ])
        assert "'n'" in replies[0]["reason"] and replies[1]["reason"] == "Contact not found"
        assert "'fields'" in replies[2]["reason"]

    async def test_search_understands_the_toolkit_queries(self) -> None:
        """msisdn (with Lucene's escaped +), extras-<name>, quoted values, prefixes, groups, AND, OR, max_keys."""
        worker = await self.make_worker()
        a = (await self.one(worker, "contacts.new", contact={
            "msisdn": "+27831111111", "name": "Zoë", "extra": {"lang": "en", "city": "Cape Town"},
            "groups": ["g1"]}))["contact"]["key"]
        b = (await self.one(worker, "contacts.new", contact={
            "msisdn": "+27832222222", "name": "Zack", "extra": {"lang": "fr"}}))["contact"]["key"]
        queries = ["msisdn:+27831111111", r"msisdn:\+27832222222", "extras-lang:en", 'extras-city:"Cape Town"',
                   "name:Z*", "groups:g1", "extras-lang:fr AND name:Zack", "extras-lang:fr AND name:Zoë",
                   "extras-lang:fr OR name:Zoë", "extras-lang:de"]
        replies = await self.run_child(worker, [{"cmd": "contacts.search", "query": q} for q in queries]
                                       + [{"cmd": "contacts.search", "query": "name:Z*", "max_keys": 1}])
        assert all(r["success"] for r in replies), replies
        assert [r["keys"] for r in replies[:-1]] == [
            [a], [b], [a], [a], sorted([a, b]), [a], [b], [], sorted([a, b]), []]
        assert len(replies[-1]["keys"]) == 1

    async def test_search_refuses_what_it_cannot_read(self) -> None:
        """A query in unsupported syntax, a missing query or a bad max_keys fail with reasons."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "contacts.search", "query": "(name:a OR name:b)"},
            {"cmd": "contacts.search", "query": "name:a AND"},
            {"cmd": "contacts.search"},
            {"cmd": "contacts.search", "query": "name:a", "max_keys": -1},
            {"cmd": "contacts.search", "query": ""},
        ])
        assert [r["success"] for r in replies] == [False] * 5
        assert "supported are field:value terms" in replies[0]["reason"]
        assert "complete field:value" in replies[1]["reason"]
        assert replies[2]["reason"] == "Expected 'query' field in request"
        assert "max_keys" in replies[3]["reason"] and "empty" in replies[4]["reason"]

    async def test_tenants_never_see_each_other(self) -> None:
        """A contact of one sandbox_id is invisible to another by address, key and search."""
        worker = await self.make_worker()
        key = (await self.one(worker, "contacts.get_or_create", addr="+27831234567"))["contact"]["key"]
        replies = await self.run_child(worker, [
            {"cmd": "contacts.get", "addr": "+27831234567"},
            {"cmd": "contacts.get_by_key", "key": key},
            {"cmd": "contacts.search", "query": "msisdn:+27831234567"},
            {"cmd": "groups.list"},
        ], sandbox_id="tenant-a#x")
        assert replies[0]["reason"] == "Contact not found" and replies[1]["reason"] == "Contact not found"
        assert replies[2]["keys"] == [] and replies[3]["groups"] == []

    async def test_contact_cap_fails_with_a_reason_and_reports_it(self) -> None:
        """Past max_contacts new contacts fail with 'Too many contacts'; existing ones still resolve."""
        worker = await self.make_worker(max_contacts=2)
        with self.assertLogs("vxsandbox.sandbox", logging.WARNING) as operator:  # type: ignore[attr-defined]
            replies = await self.run_child(worker, [
                {"cmd": "contacts.get_or_create", "addr": "+1"}, {"cmd": "contacts.new", "contact": {}}])
            later = await self.run_child(worker, [
                {"cmd": "contacts.get_or_create", "addr": "+2"}, {"cmd": "contacts.new", "contact": {}},
                {"cmd": "contacts.get_or_create", "addr": "+1"}])
        assert all(r["success"] for r in replies)
        assert later[0]["reason"] == ("Too many contacts: the sandbox already has 2 contacts and may have at most 2 "
                                      "(max_contacts)")
        assert later[1]["reason"] == later[0]["reason"]
        assert later[2]["success"] is True and later[2]["created"] is False
        owner = warnings_in(self.owner_log(worker))
        assert sum("may have at most 2" in w for w in owner) == 2, owner
        assert sum("may have at most 2" in line for line in operator.output) == 2

    async def test_contact_size_is_capped(self) -> None:
        """A contact larger than max_contact_size is refused, naming the option."""
        worker = await self.make_worker(max_contact_size=1024)
        reply = await self.one(worker, "contacts.new", contact={"extra": {"blob": "x" * 2000}})
        assert reply["success"] is False and "max_contact_size" in reply["reason"]

    async def test_racing_get_or_create_makes_one_contact(self) -> None:
        """Many get_or_create requests for one new address at once create exactly one contact."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [{"cmd": "contacts.get_or_create", "addr": "+27831234567"}] * 10)
        assert len({r["contact"]["key"] for r in replies}) == 1
        assert sum(r["created"] for r in replies) == 1
        search = await self.one(worker, "contacts.search", query="msisdn:+27831234567")
        assert len(search["keys"]) == 1

    # --- groups ---------------------------------------------------------------------------

    async def test_groups_get_or_create_get_and_list(self) -> None:
        """get_or_create_by_name creates once; get, get_by_name, list and search return Go-shaped groups."""
        worker = await self.make_worker()
        first = await self.one(worker, "groups.get_or_create_by_name", name="Tea lovers")
        assert first["created"] is True
        group = first["group"]
        assert_toolkit_group(group)
        assert group["query"] is None and group["user_account"] == "tenant-a"
        await self.one(worker, "groups.get_or_create_by_name", name="Coffee")
        replies = await self.run_child(worker, [
            {"cmd": "groups.get_or_create_by_name", "name": "Tea lovers"},
            {"cmd": "groups.get", "key": group["key"]},
            {"cmd": "groups.get_by_name", "name": "Tea lovers"},
            {"cmd": "groups.list"},
            {"cmd": "groups.search", "query": 'name:"Tea lovers"'},
            {"cmd": "groups.get", "key": "missing"},
            {"cmd": "groups.get_by_name", "name": "missing"},
            {"cmd": "groups.get"},
        ])
        assert replies[0]["created"] is False and replies[0]["group"] == group
        assert replies[1]["group"] == group and replies[2]["group"] == group
        assert [g["name"] for g in replies[3]["groups"]] == ["Coffee", "Tea lovers"]
        for g in replies[3]["groups"]:
            assert_toolkit_group(g)
        assert replies[4]["groups"] == [group]
        assert replies[5]["reason"] == "Group not found" and replies[6]["reason"] == "Group not found"
        assert "'key'" in replies[7]["reason"]

    async def test_group_update_and_duplicate_names(self) -> None:
        """update renames and sets a query; two groups of one name make get_by_name fail as in Go."""
        worker = await self.make_worker()
        a = (await self.one(worker, "groups.get_or_create_by_name", name="a"))["group"]
        await self.one(worker, "groups.get_or_create_by_name", name="b")
        updated = await self.one(worker, "groups.update", key=a["key"], name="b", query="extras-lang:en")
        assert updated["group"] == dict(a, name="b", query="extras-lang:en")
        replies = await self.run_child(worker, [
            {"cmd": "groups.get_by_name", "name": "b"},
            {"cmd": "groups.get_or_create_by_name", "name": "b"},
            {"cmd": "groups.update", "key": "missing", "name": "x"},
            {"cmd": "groups.update", "key": a["key"]},
            {"cmd": "groups.update", "key": a["key"], "name": "c", "query": "(bad"},
        ])
        assert replies[0]["reason"] == "Multiple groups found" and replies[1]["reason"] == "Multiple groups found"
        assert replies[2]["reason"] == "Group not found" and "'name'" in replies[3]["reason"]
        assert "'query'" in replies[4]["reason"]
        static = await self.one(worker, "groups.update", key=a["key"], name="c")
        assert static["group"]["query"] is None

    async def test_count_members_of_static_and_smart_groups(self) -> None:
        """count_members counts contacts in a static group and the matches of a smart group's query."""
        worker = await self.make_worker()
        static = (await self.one(worker, "groups.get_or_create_by_name", name="static"))["group"]
        smart = (await self.one(worker, "groups.get_or_create_by_name", name="smart"))["group"]
        await self.one(worker, "groups.update", key=smart["key"], name="smart", query="extras-lang:en")
        await self.run_child(worker, [
            {"cmd": "contacts.new", "contact": {"msisdn": "+1", "groups": [static["key"]], "extra": {"lang": "en"}}},
            {"cmd": "contacts.new", "contact": {"msisdn": "+2", "groups": [static["key"]]}},
            {"cmd": "contacts.new", "contact": {"msisdn": "+3", "extra": {"lang": "en"}}},
            {"cmd": "contacts.new", "contact": {"msisdn": "+4"}},
        ])
        replies = await self.run_child(worker, [
            {"cmd": "groups.count_members", "key": static["key"]},
            {"cmd": "groups.count_members", "key": smart["key"]},
            {"cmd": "groups.count_members", "key": "missing"},
        ])
        assert replies[0]["count"] == 2 and replies[0]["group"] == static
        assert replies[1]["count"] == 2 and replies[1]["group"]["query"] == "extras-lang:en"
        assert replies[2]["reason"] == "Group not found"

    async def test_group_cap(self) -> None:
        """Past max_groups a new group fails with 'Too many groups'; existing names still resolve."""
        worker = await self.make_worker(max_groups=1)
        await self.one(worker, "groups.get_or_create_by_name", name="a")
        replies = await self.run_child(worker, [
            {"cmd": "groups.get_or_create_by_name", "name": "b"},
            {"cmd": "groups.get_or_create_by_name", "name": "a"},
        ])
        assert replies[0]["reason"] == ("Too many groups: the sandbox already has 1 groups and may have at most 1 "
                                        "(max_groups)")
        assert replies[1]["success"] is True

    # --- opt-outs -------------------------------------------------------------------------

    async def test_optout_status_count_and_cancel(self) -> None:
        """optout records when and why; status and count see it; cancel_optout opts the address back in."""
        worker = await self.make_worker()
        before = await self.run_child(worker, [
            {"cmd": "optout.status", "address_type": "msisdn", "address_value": "+27831234567"},
            {"cmd": "optout.count"}])
        assert before[0] == {**before[0], "success": True, "opted_out": False} and before[1]["count"] == 0
        out = await self.one(worker, "optout.optout", address_type="msisdn", address_value="+27831234567",
                             message_id="m1")
        assert out["opted_out"] is True and out["message_id"] == "m1" and isinstance(out["created_at"], str)
        during = await self.run_child(worker, [
            {"cmd": "optout.status", "address_type": "msisdn", "address_value": "+27831234567"},
            {"cmd": "optout.count"},
            {"cmd": "optout.status", "address_type": "msisdn", "address_value": "+27831234567"}], sandbox_id="b")
        assert during[1]["count"] == 0 and during[0]["opted_out"] is False  # another tenant
        mine = await self.one(worker, "optout.status", address_type="msisdn", address_value="+27831234567")
        assert (mine["opted_out"], mine["message_id"], mine["created_at"]) == (True, "m1", out["created_at"])
        cancel = await self.one(worker, "optout.cancel_optout", address_type="msisdn", address_value="+27831234567")
        assert cancel["success"] is True and cancel["opted_out"] is False
        after = await self.run_child(worker, [
            {"cmd": "optout.status", "address_type": "msisdn", "address_value": "+27831234567"},
            {"cmd": "optout.count"}])
        assert after[0]["opted_out"] is False and after[1]["count"] == 0

    async def test_optout_field_errors_follow_go(self) -> None:
        """A missing field says 'Missing key'; an empty one 'Invalid value'."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "optout.optout", "address_type": "msisdn", "address_value": "+1"},
            {"cmd": "optout.status", "address_type": "", "address_value": "+1"},
            {"cmd": "optout.cancel_optout", "address_value": "+1"},
        ])
        assert [r["reason"] for r in replies] == [
            "Missing key: message_id", 'Invalid value "" for "address_type" (expected a non-empty string)',
            "Missing key: address_type"]

    async def test_optout_cap(self) -> None:
        """Past max_optouts a new opt-out fails with 'Too many opt-outs'; renewing an existing one works."""
        worker = await self.make_worker(max_optouts=1)
        await self.one(worker, "optout.optout", address_type="msisdn", address_value="+1", message_id="m")
        replies = await self.run_child(worker, [
            {"cmd": "optout.optout", "address_type": "msisdn", "address_value": "+2", "message_id": "m"},
            {"cmd": "optout.optout", "address_type": "msisdn", "address_value": "+1", "message_id": "m2"},
        ])
        assert "Too many opt-outs" in replies[0]["reason"] and "max_optouts" in replies[0]["reason"]
        assert replies[1]["success"] is True

    async def test_policy_refuses_send_to_an_opted_out_address_but_allows_replies(self) -> None:
        """With the plugin, send_to and send_to_endpoint to an opted-out to_addr fail; reply_to and others pass."""
        worker = await self.make_worker(plugins=(policy,),
                                        extra={"outbound": {"cls": "vxsandbox_core.testing:RecordingResource"}})
        await self.one(worker, "optout.optout", address_type="msisdn", address_value="+27831234567",
                       message_id="m1")
        replies = await self.run_child(worker, [
            {"cmd": "outbound.send_to", "to_addr": "+27831234567", "content": "hi"},
            {"cmd": "outbound.send_to_endpoint", "to_addr": "+27831234567", "content": "hi", "endpoint": "sms"},
            {"cmd": "outbound.send_to", "to_addr": "+27830000000", "content": "hi"},
            {"cmd": "outbound.reply_to", "in_reply_to": "x", "content": "bye"},
        ])
        assert [r["success"] for r in replies] == [False, False, True, True]
        assert "'+27831234567' has opted out" in replies[0]["reason"]
        outbound: Any = worker.resources.resources["outbound"]
        assert isinstance(outbound, RecordingResource)
        # only the allowed requests reached the resource (in whatever order their checks finished)
        assert sorted((r["cmd"], str(r.get("to_addr"))) for r in outbound.requests) == [
            ("reply_to", "None"), ("send_to", "+27830000000")]
        other = await self.run_child(worker, [{"cmd": "outbound.send_to", "to_addr": "+27831234567"}],
                                     sandbox_id="tenant-b")
        assert other[0]["success"] is True  # opted out of tenant-a only

    def owner_log(self, worker: Any) -> list[tuple[str, int, str]]:
        return worker.resources.resources["log"].lines  # type: ignore[no-any-return]
