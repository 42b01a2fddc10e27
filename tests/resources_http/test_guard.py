"""Tests for the destination guard: default rules, host rules, and choosing an address after resolution."""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.trial.unittest import SynchronousTestCase

from vxsandbox_resources_http import DestinationGuard, DestinationRefusedError, HostRules
from vxsandbox_resources_http.guard import default_refusal, parse_address

from .helpers import ScriptedResolver


def guard(allowed: list[str] = (), denied: list[str] = (), only: bool = False) -> DestinationGuard:  # type: ignore[assignment]
    return DestinationGuard(HostRules.parse(allowed), HostRules.parse(denied), only)


class DefaultRuleTests(SynchronousTestCase):
    """Which addresses the default rules refuse, and why."""

    def test_non_public_addresses_are_refused_with_their_rule(self) -> None:
        """Each kind of non-public address is refused, named by its kind."""
        cases = {
            "127.0.0.1": "a loopback address", "::1": "a loopback address",
            "::ffff:127.0.0.1": "a loopback address", "10.0.0.1": "a private address",
            "172.16.5.4": "a private address", "192.168.1.1": "a private address",
            "fd00::1": "a private address", "169.254.169.254": "a link-local address",
            "fe80::1": "a link-local address", "224.0.0.251": "a multicast address",
            "ff02::1": "a multicast address", "0.0.0.0": "an unspecified address", "::": "an unspecified address",
            "240.0.0.1": "a reserved address", "100.64.0.1": "not a globally routable address",
        }
        for text, rule in cases.items():
            self.assertEqual(default_refusal(ipaddress.ip_address(text)), rule, text)

    def test_public_addresses_are_allowed(self) -> None:
        """Globally routable IPv4 and IPv6 addresses pass the default rules."""
        for text in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
            self.assertIsNone(default_refusal(ipaddress.ip_address(text)), text)

    def test_parse_address(self) -> None:
        """Address literals parse with or without brackets and zone; names are not addresses."""
        self.assertEqual(parse_address("[::1]"), ipaddress.ip_address("::1"))
        self.assertEqual(parse_address("fe80::1%eth0"), ipaddress.ip_address("fe80::1"))
        self.assertIsNone(parse_address("example.com"))


class HostRulesTests(SynchronousTestCase):
    """Parsing and matching allowed_hosts / denied_hosts entries."""

    def test_names_wildcards_and_networks(self) -> None:
        """Exact names, '*.' wildcards (subdomains only) and CIDRs match what they should."""
        rules = HostRules.parse(["API.Example.com.", "*.corp.test", "10.0.0.0/8", "192.0.2.7", "fd00::/8"])
        self.assertEqual(rules.match_name("api.example.com"), "api.example.com")
        self.assertIsNone(rules.match_name("www.example.com"))
        self.assertEqual(rules.match_name("a.b.corp.test"), "*.corp.test")
        self.assertIsNone(rules.match_name("corp.test"))
        self.assertEqual(rules.match_address(ipaddress.ip_address("10.2.3.4")), "10.0.0.0/8")
        self.assertEqual(rules.match_address(ipaddress.ip_address("192.0.2.7")), "192.0.2.7/32")
        self.assertEqual(rules.match_address(ipaddress.ip_address("::ffff:10.0.0.1")), "10.0.0.0/8")
        self.assertEqual(rules.match_address(ipaddress.ip_address("fd12::1")), "fd00::/8")
        self.assertIsNone(rules.match_address(ipaddress.ip_address("11.0.0.1")))

    def test_bad_entries_are_rejected(self) -> None:
        """An entry that is neither a name, a wildcard nor a CIDR raises ValueError naming it."""
        for entry in ("has space", "10.0.0.0/40", "", 5, "a..b"):
            with self.assertRaises(ValueError) as caught:
                HostRules.parse([entry])
            self.assertIn(repr(entry), str(caught.exception))


class ChooseTests(SynchronousTestCase):
    """Resolving a host and choosing the address to connect to."""

    def address_for(self, g: DestinationGuard, host: str, table: dict[str, list[str]]) -> Deferred[str]:
        return Deferred.fromCoroutine(g.address_for(ScriptedResolver(table), host, 80))

    def test_denied_wins_over_allowed(self) -> None:
        """An address in both allowed and denied networks is refused, naming the denied entry."""
        failure = self.failureResultOf(
            self.address_for(guard(["10.0.0.0/8"], ["10.1.0.0/16"]), "db.test", {"db.test": ["10.1.2.3"]}),
            DestinationRefusedError)
        self.assertEqual(str(failure.value),
                         "'db.test' resolves to 10.1.2.3, which is in denied_hosts entry '10.1.0.0/16'")

    def test_every_reason_is_given_when_all_addresses_are_refused(self) -> None:
        """When no address is allowed, the refusal lists why for each."""
        failure = self.failureResultOf(
            self.address_for(guard(), "both.test", {"both.test": ["127.0.0.1", "10.0.0.1"]}),
            DestinationRefusedError)
        self.assertIn("127.0.0.1, a loopback address", str(failure.value))
        self.assertIn("10.0.0.1, a private address", str(failure.value))

    def test_public_address_is_chosen(self) -> None:
        """A public address is returned for connecting, skipping refused ones before it."""
        self.assertEqual(self.successResultOf(
            self.address_for(guard(), "mixed.test", {"mixed.test": ["192.168.0.1", "93.184.216.34"]})),
            "93.184.216.34")

    def test_unresolvable_name_is_a_lookup_error(self) -> None:
        """A name with no addresses fails with DNSLookupError naming it."""
        failure = self.failureResultOf(self.address_for(guard(), "nowhere.test", {}), DNSLookupError)
        self.assertIn("'nowhere.test'", str(failure.value))

    def test_allowed_only_refuses_unlisted_public_addresses(self) -> None:
        """allowed_hosts_only refuses a public address that allowed_hosts does not list."""
        failure = self.failureResultOf(
            self.address_for(guard(["api.test"], only=True), "other.test", {"other.test": ["93.184.216.34"]}),
            DestinationRefusedError)
        self.assertIn("not in allowed_hosts (allowed_hosts_only is set)", str(failure.value))
        self.assertEqual(self.successResultOf(
            self.address_for(guard(["api.test"], only=True), "api.test", {"api.test": ["93.184.216.34"]})),
            "93.184.216.34")
