"""Tests for the contact model's query parser and the store's key scheme, fuzzed with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vxsandbox_core import CommandError
from vxsandbox_resources_contacts import ContactsKeyScheme
from vxsandbox_resources_contacts.model import normalize_address, parse_query

_IDS = st.text(alphabet=st.sampled_from("ab#%23:") | st.characters(codec="utf-8"), max_size=8)


@given(st.text(max_size=40))
def test_any_query_text_parses_or_fails_with_a_reason(query: str) -> None:
    """Whatever an app sends as a query, the parser gives a matcher or a CommandError, never a crash."""
    try:
        matcher = parse_query(query)
    except CommandError as e:
        assert "'query'" in e.reason
    else:
        assert matcher({"key": "k", "msisdn": "+1", "groups": ["g"]}) in (True, False)


@given(_IDS, _IDS)
def test_tenants_never_share_a_name(a: str, b: str) -> None:
    """Two different sandbox_ids get different names for every kind of record, and kinds never collide."""
    scheme = ContactsKeyScheme("vumi")
    names_a = [scheme.contacts(a), scheme.addresses(a), scheme.groups(a), scheme.optouts(a)]
    names_b = [scheme.contacts(b), scheme.addresses(b), scheme.groups(b), scheme.optouts(b)]
    assert len(set(names_a)) == 4
    if a != b:
        assert not set(names_a) & set(names_b)


def test_addresses_are_normalised_as_the_toolkit_dummy_does() -> None:
    """An msisdn gets exactly one leading +; a gtalk id loses its /device part; others stay as sent."""
    assert normalize_address("msisdn", "27831234567") == "+27831234567"
    assert normalize_address("msisdn", "++27831234567") == "+27831234567"
    assert normalize_address("gtalk_id", "zoe@example.org/phone") == "zoe@example.org"
    assert normalize_address("twitter_handle", "@tea/x") == "@tea/x"
