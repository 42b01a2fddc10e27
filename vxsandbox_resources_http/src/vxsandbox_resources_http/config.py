"""Options of the http resource (the ``sandbox.<name>`` mapping of a worker config)."""

from __future__ import annotations

from typing import Any

from vxsandbox_core.config import Field, ResourceConfig, positive

from .guard import HostRules

KiB = 1024


def _host_rules(value: list[Any]) -> HostRules:
    return HostRules.parse(value)


class HttpClientConfig(ResourceConfig):
    """Config of :class:`~vxsandbox_resources_http.HttpClientResource`; the fields are its reference."""

    timeout: float
    data_limit: int
    allowed_hosts: HostRules
    denied_hosts: HostRules
    allowed_hosts_only: bool
    follow_redirects: bool
    max_redirects: int
    max_headers: int
    max_concurrent_requests: int
    max_concurrent_requests_per_tenant: int
    max_header_bytes: int

    fields = (
        Field("timeout", (int, float),
              "seconds a whole request may take (resolving, connecting, sending, reading the body)",
              30, positive),
        Field("data_limit", (int,),
              "bytes of response body a request may receive; a larger body is cut off and the request fails",
              128 * KiB, positive),
        Field("max_headers", (int,),
              "header lines a response may have; past them the connection is dropped and the request fails",
              100, positive),
        Field("max_header_bytes", (int,),
              "bytes of a response's status line and headers together; past them the connection is dropped "
              "and the request fails", 64 * KiB, positive),
        Field("allowed_hosts", (list,),
              "host names ('api.example.com', '*.example.com') and networks ('10.1.0.0/16', '127.0.0.1') "
              "exempt from the default refusal of loopback, private, link-local, multicast and other "
              "non-public addresses", lambda: HostRules(), _host_rules),
        Field("denied_hosts", (list,),
              "host names and networks always refused, even if allowed_hosts lists them",
              lambda: HostRules(), _host_rules),
        Field("allowed_hosts_only", (bool,),
              "refuse every destination that allowed_hosts does not list", False),
        Field("follow_redirects", (bool,),
              "follow redirects (each hop passes the destination guard again)", True),
        Field("max_redirects", (int,), "redirects followed before a request fails", 10, positive),
        Field("max_concurrent_requests", (int,),
              "requests this resource may have in flight at once, for every sandbox together (each holds "
              "a file descriptor); more are refused at once with the reason", 200, positive),
        Field("max_concurrent_requests_per_tenant", (int,),
              "requests one sandbox_id may have in flight at once; more are refused at once with the reason",
              20, positive),
    )
