"""The destination guard: which hosts and addresses an app's HTTP requests may reach.

A request's host name is resolved once, without blocking the reactor, and
every address it resolves to is checked; the connection then goes to a
checked address, never to a second resolution of the name (which a DNS
rebinding attacker could point somewhere else). By default the guard refuses
every address that is not globally routable: loopback, private, link-local,
multicast, unspecified, reserved and the like, so an app cannot reach the
worker's own network. ``denied_hosts`` refuses more; ``allowed_hosts``
exempts names or networks from the default rules (and, with
``allowed_hosts_only``, becomes the only destinations permitted).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer

from .errors import DestinationRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: (predicate, description) pairs, checked in order; the first that matches names the rule in a refusal
_DEFAULT_RULES: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (lambda a: a.is_loopback, "a loopback address"),
    (lambda a: a.is_unspecified, "an unspecified address"),
    (lambda a: a.is_link_local, "a link-local address"),
    (lambda a: a.is_multicast, "a multicast address"),
    (lambda a: a.is_reserved, "a reserved address"),
    (lambda a: a.is_private, "a private address"),
    (lambda a: getattr(a, "is_site_local", False), "a site-local address"),
    (lambda a: not a.is_global, "not a globally routable address"),
)


def parse_address(text: str) -> IPAddress | None:
    """The IP address ``text`` spells (IPv6 with or without brackets or zone), or ``None`` for a host name."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    candidate = candidate.split("%", 1)[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def _effective(address: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 reaches 127.0.0.1; judge it as what it reaches.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def default_refusal(address: IPAddress) -> str | None:
    """Why the default rules refuse ``address`` (e.g. ``"a loopback address"``), or ``None`` if they allow it."""
    effective = _effective(address)
    for predicate, description in _DEFAULT_RULES:
        if predicate(effective):
            return description
    return None


def _valid_host_name(name: str) -> bool:
    labels = name.split(".")
    return all(label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
               for label in labels)


@dataclass(frozen=True)
class HostRules:
    """A list of host names (``example.com``, ``*.example.com`` for its subdomains) and networks (CIDRs)."""

    entries: tuple[str, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[Any]) -> HostRules:
        """Build rules from config entries.

        :raises ValueError: an entry is neither a host name, a ``*.`` wildcard nor an address or CIDR.
        """
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        kept: list[str] = []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                raise ValueError(f"entry {entry!r} is not a host name or CIDR string")
            text = entry.strip().lower().rstrip(".")
            kept.append(text)
            if "/" in text or parse_address(text) is not None:
                try:
                    networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                except ValueError:
                    raise ValueError(f"entry {entry!r} is not a valid address or CIDR") from None
            elif text.startswith("*.") and _valid_host_name(text[2:]):
                suffixes.append(text[1:])
            elif _valid_host_name(text):
                names.add(text)
            else:
                raise ValueError(f"entry {entry!r} is neither a host name, a '*.domain' wildcard nor a CIDR")
        return cls(tuple(kept), frozenset(names), tuple(suffixes), tuple(networks))

    def match_name(self, host: str) -> str | None:
        """The entry matching host name ``host``, or ``None``."""
        host = host.lower().rstrip(".")
        if host in self.names:
            return host
        for suffix in self.suffixes:
            if host.endswith(suffix):
                return "*" + suffix
        return None

    def match_address(self, address: IPAddress) -> str | None:
        """The network entry containing ``address`` (or the address it maps to), or ``None``."""
        for candidate in {address, _effective(address)}:
            for network in self.networks:
                if candidate.version == network.version and candidate in network:
                    return str(network)
        return None


@implementer(IResolutionReceiver)
class _Collector:
    """Collects every address one resolution yields."""

    def __init__(self, done: Deferred[list[str]]) -> None:
        self.done = done
        self.addresses: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if address.host not in self.addresses:
            self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        # A cancelled (timed-out) lookup has already fired; the late answer is dropped.
        if not self.done.called:
            self.done.callback(self.addresses)


def resolve(resolver: Any, host: str, port: int) -> Deferred[list[str]]:
    """Resolve ``host`` to its addresses (IPv4 and IPv6) without blocking the reactor.

    :param resolver: an ``IHostnameResolver`` (such as ``reactor.nameResolver``).
    """
    done: Deferred[list[str]] = Deferred()
    resolver.resolveHostName(_Collector(done), host, port)
    return done


class DestinationGuard:
    """Decides which address, if any, a request to a host may connect to.

    :param allowed: names and networks exempt from the default rules.
    :param denied: names and networks always refused (denied wins over allowed).
    :param allowed_only: refuse every destination not in ``allowed``.
    """

    def __init__(self, allowed: HostRules, denied: HostRules, allowed_only: bool = False) -> None:
        self.allowed = allowed
        self.denied = denied
        self.allowed_only = allowed_only

    def check_name(self, host: str) -> None:
        """Refuse a host name before it is resolved, if a rule names it.

        :raises DestinationRefusedError: ``host`` is in ``denied_hosts``.
        """
        entry = self.denied.match_name(host)
        if entry is not None:
            raise DestinationRefusedError(f"host {host!r} matches denied_hosts entry {entry!r}")

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to ``address`` (which ``host`` resolved to) is refused, or ``None`` if it is allowed."""
        where = (f"{host!r} is {address}" if parse_address(host) is not None
                 else f"{host!r} resolves to {address}")
        entry = self.denied.match_address(address)
        if entry is not None:
            return f"{where}, which is in denied_hosts entry {entry!r}"
        if self.allowed.match_name(host) is not None or self.allowed.match_address(address) is not None:
            return None
        if self.allowed_only:
            return f"{where}, which is not in allowed_hosts (allowed_hosts_only is set)"
        rule = default_refusal(address)
        if rule is not None:
            return f"{where}, {rule}, refused by default (not in allowed_hosts)"
        return None

    def choose(self, host: str, addresses: list[str]) -> str:
        """The first of ``addresses`` the rules allow.

        :raises DestinationRefusedError: none is allowed; the message gives the reason for each.
        """
        if not addresses:
            raise DestinationRefusedError(f"host {host!r} resolved to no addresses")
        reasons = []
        for text in addresses:
            address = parse_address(text)
            if address is None:
                reasons.append(f"{host!r} resolved to {text!r}, which is not an IP address")
                continue
            reason = self.refusal(host, address)
            if reason is None:
                return text
            reasons.append(reason)
        raise DestinationRefusedError("; ".join(dict.fromkeys(reasons)))

    async def address_for(self, resolver: IHostnameResolver, host: str, port: int) -> str:
        """Resolve ``host`` (unless it is an address) and return the address to connect to.

        :raises DestinationRefusedError: a rule refuses the name or every address it resolves to.
        :raises DNSLookupError: the name does not resolve.
        """
        self.check_name(host)
        literal = parse_address(host)
        if literal is not None:
            return self.choose(host, [str(literal)])
        addresses = await resolve(resolver, host, port)
        if not addresses:
            raise DNSLookupError(f"could not resolve host {host!r}")
        return self.choose(host, addresses)
