"""Tests for the ``http`` resource: every command and error reply, driven by a real child against a real server."""

from __future__ import annotations

import base64
import json
import tracemalloc
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core import ConfigError
from vxsandbox_core.dispatch import CommandError
from vxsandbox_resources_http import HttpClientResource

from .helpers import ScriptedResolver, run_child
from .server import BINARY, LocalServer, LocalTlsServer, MiB, parse_multipart


class ServerTestCase(TestCase):
    """Starts the local test server for each test."""

    def setUp(self) -> None:
        self.server = LocalServer()
        self.addCleanup(self.server.stop)
        self.port = self.server.port.getHost().port

    async def drive(self, requests: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        return await run_child(self, requests, **kwargs)


class CommandTests(ServerTestCase):
    """Each command reaches the server and its reply carries code, body and headers."""

    async def test_get_replies_with_code_body_and_headers(self) -> None:
        """A GET's reply has success, the status code, the text body and every response header."""
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/echo?a=1")}])
        self.assertTrue(reply["success"], reply)
        self.assertEqual(reply["code"], 200)
        self.assertEqual(json.loads(reply["body"]), {"method": "GET", "uri": "/echo?a=1"})
        self.assertNotIn("body_encoding", reply)
        self.assertEqual(reply["headers"]["X-Multi"], ["one", "two"])
        self.assertEqual(reply["headers"]["Content-Type"], ["application/json"])
        self.assertNotIn("Content-Encoding", reply["headers"])

    async def test_requests_leave_no_factory_lines_in_the_log(self) -> None:
        """A request logs no Twisted "Starting factory" / "Stopping factory" lines (noise for an operator)."""
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            events.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/echo")}])
        self.assertTrue(reply["success"], reply)
        await deferLater(reactor, 0, lambda: None)
        noisy = [e for e in events if "factory" in e.lower()]
        self.assertEqual(noisy, [])
        # the observer did see the run, so an empty list is not a deaf observer
        self.assertTrue(events)

    async def test_every_method_reaches_the_server(self) -> None:
        """get, head, post, put, patch and delete each arrive as their HTTP method, with their body."""
        methods = ["get", "head", "post", "put", "patch", "delete"]
        requests = [{"cmd": f"http.{m}", "url": self.server.url(f"/echo/{m}"),
                     **({"data": f"body of {m} \u00e9"} if m in ("post", "put", "patch") else {})}
                    for m in methods]
        replies = await self.drive(requests)
        for reply in replies:
            self.assertTrue(reply["success"], reply)
            self.assertEqual(reply["code"], 200)
        self.assertEqual(replies[1]["body"], "")
        self.assertEqual(json.loads(replies[5]["body"])["method"], "DELETE")
        seen = {r["path"]: r for r in self.server.requests}
        for method in methods:
            self.assertEqual(seen[f"/echo/{method}"]["method"], method.upper())
        for method in ("post", "put", "patch"):
            self.assertEqual(seen[f"/echo/{method}"]["body"], f"body of {method} \u00e9".encode())

    async def test_headers_reach_the_server_intact(self) -> None:
        """Every header value the app sends, several per name included, reaches the server unchanged."""
        headers = {"X-Token": ["abc 123", "second"], "Content-Type": ["application/json"],
                   "User-Agent": ["my app/1.0"]}
        [reply] = await self.drive([{"cmd": "http.post", "url": self.server.url("/echo"),
                                   "headers": headers, "data": "{}"}])
        self.assertTrue(reply["success"], reply)
        seen = self.server.requests[0]["headers"]
        self.assertEqual(seen["x-token"], ["abc 123", "second"])
        self.assertEqual(seen["content-type"], ["application/json"])
        self.assertEqual(seen["user-agent"], ["my app/1.0"])

    async def test_multipart_files_reach_the_server_intact(self) -> None:
        """Files are sent as multipart/form-data with their names, content types and decoded bytes."""
        files = {
            "photo": {"file_name": "cat.png", "content_type": "image/png",
                      "data": base64.b64encode(BINARY).decode()},
            "notes": {"file_name": "notes.txt", "content_type": "text/plain",
                      "data": base64.b64encode("h\u00e9llo".encode()).decode()},
        }
        [reply] = await self.drive([{"cmd": "http.post", "url": self.server.url("/echo"), "files": files}])
        self.assertTrue(reply["success"], reply)
        request = self.server.requests[0]
        [content_type] = request["headers"]["content-type"]
        self.assertTrue(content_type.startswith("multipart/form-data; boundary="))
        parts = parse_multipart(content_type, request["body"])
        self.assertEqual(parts, {
            "photo": {"file_name": "cat.png", "content_type": "image/png", "data": BINARY},
            "notes": {"file_name": "notes.txt", "content_type": "text/plain", "data": "h\u00e9llo".encode()},
        })

    async def test_error_status_is_a_successful_reply_with_its_code(self) -> None:
        """A 404 or 500 is still a reply with success true: the request worked, the code says how."""
        replies = await self.drive([{"cmd": "http.get", "url": self.server.url("/status/404")},
                                  {"cmd": "http.get", "url": self.server.url("/status/500")}])
        self.assertEqual([(r["success"], r["code"]) for r in replies], [(True, 404), (True, 500)])
        self.assertEqual(replies[0]["body"], "status 404 \u2713")

    async def test_binary_bodies_are_base64(self) -> None:
        """A binary content type or a body that is not valid UTF-8 comes back base64 with body_encoding."""
        binary, not_utf8, latin1 = await self.drive([
            {"cmd": "http.get", "url": self.server.url("/binary")},
            {"cmd": "http.get", "url": self.server.url("/not-utf8")},
            {"cmd": "http.get", "url": self.server.url("/latin1")},
        ])
        self.assertEqual(binary["body_encoding"], "base64")
        self.assertEqual(base64.b64decode(binary["body"]), BINARY)
        self.assertEqual(not_utf8["body_encoding"], "base64")
        self.assertEqual(base64.b64decode(not_utf8["body"]), b"\xff\xfe not utf-8")
        self.assertEqual(latin1["body"], "caf\u00e9")
        self.assertNotIn("body_encoding", latin1)

    async def test_redirects_are_followed(self) -> None:
        """A redirect to an allowed destination is followed and the reply is the final response's."""
        target = self.server.url("/echo/final")
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url(f"/redirect?to={target}")}])
        self.assertTrue(reply["success"], reply)
        self.assertEqual(json.loads(reply["body"])["uri"], "/echo/final")


class FailureTests(ServerTestCase):
    """Network failures, timeouts and the data limit give success false with a reason."""

    async def test_timeout_gives_a_reason(self) -> None:
        """A server that never answers fails the request after ``timeout`` with a reason saying so."""
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/slow")}], http={"timeout": 0.3})
        self.assertFalse(reply["success"])
        self.assertIn("timed out after 0.3 seconds", reply["reason"])
        self.assertIn("/slow", reply["reason"])

    async def test_teardown_cancels_requests_in_flight(self) -> None:
        """A request still waiting when the worker stops fails with a reason instead of hanging."""
        from vxsandbox_core.testing import FakeSandboxApi
        resource = HttpClientResource("http", None, {"cls": "http", "allowed_hosts": ["127.0.0.1"]})
        d = resource.dispatch_request(FakeSandboxApi(), {"cmd": "get", "cmd_id": "1", "url": self.server.url("/slow")})
        while not self.server.slow:
            await deferLater(reactor, 0.01)
        resource.teardown()
        with self.assertRaises(CommandError) as caught:
            await d
        self.assertIn("was cancelled (the worker is stopping)", caught.exception.reason)

    async def test_connection_refused_gives_a_reason(self) -> None:
        """A closed port fails the request with the connection error as its reason."""
        await self.server.stop()
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/echo")}])
        self.assertFalse(reply["success"])
        self.assertIn("refused", reply["reason"].lower())

    async def test_body_within_the_limit_is_returned_whole(self) -> None:
        """A body just under data_limit arrives complete."""
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/big/100000")}])
        self.assertTrue(reply["success"], reply)
        self.assertEqual(reply["body"], "x" * 100000)

    async def test_huge_body_is_cut_off_without_being_read_into_memory(self) -> None:
        """A 5 MiB body against the 128 KiB default limit fails with a reason, and memory stays far below 5 MiB."""
        # A first run pays one-off costs (lazy imports, caches) that are not the body's.
        await self.drive([{"cmd": "http.get", "url": self.server.url("/echo")}])
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        streamed, declared = await self.drive([
            {"cmd": "http.get", "url": self.server.url("/big")},
            {"cmd": "http.get", "url": self.server.url("/big?length=1")},
        ])
        _, peak = tracemalloc.get_traced_memory()
        self.assertFalse(streamed["success"])
        self.assertIn("exceeds data_limit of 131072 bytes; cut off after", streamed["reason"])
        self.assertFalse(declared["success"])
        self.assertIn("response body of 5242880 bytes (its Content-Length) exceeds data_limit of 131072",
                      declared["reason"])
        self.assertLess(peak - baseline, 1 * MiB, f"peak grew by {peak - baseline} bytes")

    async def test_data_limit_is_configurable(self) -> None:
        """data_limit from the config applies: 1000 bytes lets 1000 through and refuses 1001."""
        ok, too_big = await self.drive([{"cmd": "http.get", "url": self.server.url("/big/1000")},
                                      {"cmd": "http.get", "url": self.server.url("/big/1001")}],
                                     http={"data_limit": 1000})
        self.assertTrue(ok["success"], ok)
        self.assertFalse(too_big["success"])
        self.assertIn("data_limit of 1000 bytes", too_big["reason"])


class GuardTests(ServerTestCase):
    """The destination guard, seen from a real child."""

    async def test_localhost_is_refused_by_default(self) -> None:
        """A URL whose name resolves to 127.0.0.1 is refused by default, naming the address and the rule."""
        [reply] = await self.drive([{"cmd": "http.get", "url": f"http://localhost:{self.port}/echo"}],
                                 loopback=False)
        self.assertFalse(reply["success"])
        self.assertIn("refused", reply["reason"])
        self.assertIn("'localhost' resolves to 127.0.0.1, a loopback address", reply["reason"])
        self.assertEqual(self.server.requests, [])

    async def test_address_literals_are_refused_by_default(self) -> None:
        """Loopback, private, link-local and unspecified address literals are refused, each with its rule."""
        urls = [f"http://127.0.0.1:{self.port}/", "http://10.1.2.3/", "http://192.168.0.1/",
                "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/", "http://[::1]/",
                "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/"]
        replies = await self.drive([{"cmd": "http.get", "url": u} for u in urls], loopback=False)
        rules = ["a loopback address", "a private address", "a private address", "a link-local address",
                 "an unspecified address", "a loopback address", "a loopback address", "a multicast address"]
        for reply, rule in zip(replies, rules, strict=True):
            self.assertFalse(reply["success"])
            self.assertIn(rule, reply["reason"])
        self.assertEqual(self.server.requests, [])

    async def test_cidr_allow_and_deny(self) -> None:
        """An allowed CIDR admits its addresses; a denied CIDR inside it wins; other addresses stay refused."""
        allowed, denied = await self.drive([{"cmd": "http.get", "url": self.server.url("/echo")},
                                          {"cmd": "http.get", "url": f"http://127.0.0.2:{self.port}/"}],
                                         http={"allowed_hosts": ["127.0.0.0/8"], "denied_hosts": ["127.0.0.2/32"]})
        self.assertTrue(allowed["success"], allowed)
        self.assertFalse(denied["success"])
        self.assertIn("127.0.0.2, which is in denied_hosts entry '127.0.0.2/32'", denied["reason"])
        [narrow] = await self.drive([{"cmd": "http.get", "url": self.server.url("/echo")}],
                                  http={"allowed_hosts": ["127.0.0.2/32"]})
        self.assertFalse(narrow["success"])
        self.assertIn("a loopback address", narrow["reason"])

    async def test_connection_goes_to_the_checked_address_with_the_name_as_host(self) -> None:
        """The name is resolved once and the connection goes to that address, sending the name in Host."""
        resolver = ScriptedResolver({"app.test": ["127.0.0.1"]})
        [reply] = await self.drive([{"cmd": "http.get", "url": f"http://app.test:{self.port}/echo"}],
                                 resolver=resolver)
        self.assertTrue(reply["success"], reply)
        self.assertEqual(resolver.lookups, ["app.test"])
        self.assertEqual(self.server.requests[0]["headers"]["host"], [f"app.test:{self.port}"])

    async def test_first_allowed_address_is_used(self) -> None:
        """Of a name's addresses, refused ones are skipped and the first allowed one is connected to."""
        resolver = ScriptedResolver({"multi.test": ["10.9.9.9", "127.0.0.1"]})
        [reply] = await self.drive([{"cmd": "http.get", "url": f"http://multi.test:{self.port}/echo"}],
                                 http={"denied_hosts": ["10.0.0.0/8"]}, resolver=resolver)
        self.assertTrue(reply["success"], reply)

    async def test_allowed_and_denied_names(self) -> None:
        """An allowed name may reach any address; a denied name (wildcards too) is refused before any lookup."""
        resolver = ScriptedResolver({"intranet.test": ["127.0.0.1"], "api.evil.test": ["127.0.0.1"]})
        allowed, denied = await self.drive(
            [{"cmd": "http.get", "url": f"http://intranet.test:{self.port}/echo"},
             {"cmd": "http.get", "url": f"http://api.evil.test:{self.port}/echo"}],
            http={"allowed_hosts": ["intranet.test", "*.evil.test"], "denied_hosts": ["*.evil.test"]},
            resolver=resolver, loopback=False)
        self.assertTrue(allowed["success"], allowed)
        self.assertFalse(denied["success"])
        self.assertIn("host 'api.evil.test' matches denied_hosts entry '*.evil.test'", denied["reason"])
        self.assertEqual(resolver.lookups, ["intranet.test"])

    async def test_allowed_hosts_only(self) -> None:
        """With allowed_hosts_only, a public address not in allowed_hosts is refused too."""
        resolver = ScriptedResolver({"public.test": ["93.184.216.34"]})
        [reply] = await self.drive([{"cmd": "http.get", "url": "http://public.test/"}],
                                 http={"allowed_hosts_only": True}, resolver=resolver)
        self.assertFalse(reply["success"])
        self.assertIn("93.184.216.34, which is not in allowed_hosts (allowed_hosts_only is set)", reply["reason"])

    async def test_allowed_ipv6_literal_is_refused_with_a_reason(self) -> None:
        """An allowed IPv6 literal, which treq cannot encode, fails with a reason saying to use a name."""
        [reply] = await self.drive([{"cmd": "http.get", "url": "http://[::1]/"}], http={"allowed_hosts": ["::1"]})
        self.assertFalse(reply["success"])
        self.assertIn("url: IPv6 address literals such as '::1' are not supported", reply["reason"])

    async def test_unresolvable_name_gives_a_reason(self) -> None:
        """A name that resolves to nothing fails with a reason naming it."""
        [reply] = await self.drive([{"cmd": "http.get", "url": "http://nowhere.test/"}],
                                 resolver=ScriptedResolver({}))
        self.assertFalse(reply["success"])
        self.assertIn("could not resolve host 'nowhere.test'", reply["reason"])

    async def test_redirects_pass_the_guard_again(self) -> None:
        """A redirect from an allowed server to a refused destination is refused, not followed."""
        target = f"http://[::1]:{self.port}/echo"
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url(f"/redirect?to={target}")}],
                                 http={"allowed_hosts": ["127.0.0.1"]}, loopback=False)
        self.assertFalse(reply["success"])
        self.assertIn("'::1' is ::1, a loopback address", reply["reason"])


class FieldErrorTests(ServerTestCase):
    """Bad command fields give success false and a reason naming the field."""

    async def test_bad_fields_name_the_field(self) -> None:
        """Each malformed field is rejected before any request is made, with the field named first."""
        url = self.server.url("/echo")
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "url: expected a non-empty string"),
            ({"url": 5}, "url: expected a non-empty string"),
            ({"url": "ftp://example.com/"}, "url: scheme 'ftp' is not allowed (only http and https)"),
            ({"url": "file:///etc/passwd"}, "url: scheme 'file' is not allowed"),
            ({"url": "http:///path"}, "has no host"),
            ({"url": url, "headers": ["X-A"]}, "headers: expected a mapping"),
            ({"url": url, "headers": {"X-A": "one"}}, "headers['X-A']: expected a list of strings"),
            ({"url": url, "headers": {"X-A": ["a\r\nX-Injected: 1"]}}, "headers['X-A']: values may not contain"),
            ({"url": url, "headers": {"Bad Name": ["a"]}}, "headers: 'Bad Name' is not a valid header name"),
            ({"url": url, "data": {"a": 1}}, "data: expected a string"),
            ({"url": url, "files": {"f": {"file_name": "a", "content_type": "text/plain", "data": "!!"}}},
             "files['f'].data: is not valid base64"),
            ({"url": url, "files": {"f": {"content_type": "text/plain", "data": ""}}},
             "files['f'].file_name: expected a string"),
            ({"url": url, "files": "x"}, "files: expected a mapping"),
            ({"url": url, "data": "a", "files": {}}, "data: cannot be combined with files"),
            ({"url": url, "verify_options": ["VERIFY_SOMETIMES"]}, "verify_options: unknown option(s)"),
            ({"url": url, "verify_options": []}, "verify_options: expected a non-empty list"),
            ({"url": url, "ssl_method": "SSLv3"}, "ssl_method: 'SSLv3' is not supported (SSLv3 is insecure"),
            ({"url": url, "ssl_method": "SSLv1000"}, "ssl_method: 'SSLv1000' is not supported"),
        ]
        replies = await self.drive([{"cmd": "http.post", **fields} for fields, _ in cases])
        for (fields, expected), reply in zip(cases, replies, strict=True):
            self.assertFalse(reply["success"], fields)
            self.assertIn(expected, reply["reason"], fields)
        self.assertEqual(self.server.requests, [])

    async def test_unknown_command_kills_the_sandbox(self) -> None:
        """A command the resource does not have kills the sandbox, as every resource does."""
        from vxsandbox_core import Sandbox
        from vxsandbox_core.testing import (
            RecordingBroker,
            hooks_with,
            make_user_message,
            python_child,
            python_worker_config,
        )
        worker = Sandbox(python_worker_config(python_child([{"cmd": "http.options", "url": "http://x/"}]),
                                              sandbox={"http": {"cls": "http"}}),
                         broker=RecordingBroker(), hooks=hooks_with())
        await worker.setup()
        self.assertEqual(await worker.process_message(make_user_message()), "error")


class ConfigTests(TestCase):
    """The resource's options are validated when the worker is built."""

    def test_defaults(self) -> None:
        """timeout is 30 s and data_limit 128 KiB unless configured."""
        resource = HttpClientResource("http", None, {"cls": "http"})
        self.assertEqual((resource.options.timeout, resource.options.data_limit), (30, 128 * 1024))
        self.assertFalse(resource.options.allowed_hosts_only)

    def test_bad_options_name_their_key(self) -> None:
        """A bad option raises ConfigError naming sandbox.<name>.<key>."""
        cases = [({"timeout": 0}, "sandbox.web.timeout"), ({"data_limit": "big"}, "sandbox.web.data_limit"),
                 ({"allowed_hosts": ["not a host!"]}, "sandbox.web.allowed_hosts"),
                 ({"denied_hosts": ["10.0.0.0/33"]}, "sandbox.web.denied_hosts"),
                 ({"allowed_hosts": "127.0.0.1"}, "sandbox.web.allowed_hosts")]
        for options, key in cases:
            with self.assertRaises(ConfigError) as caught:
                HttpClientResource("web", None, {"cls": "http", **options})
            self.assertEqual(caught.exception.key, key)


class TlsTests(TestCase):
    """https requests: certificates are checked unless verify_options says VERIFY_NONE."""

    def setUp(self) -> None:
        self.server = LocalTlsServer()
        self.addCleanup(self.server.stop)

    async def test_untrusted_certificate_fails_with_a_reason(self) -> None:
        """A self-signed certificate fails verification by default, and the reason says it is a TLS failure."""
        [reply] = await run_child(self, [{"cmd": "http.get", "url": self.server.url("/echo")}])
        self.assertFalse(reply["success"])
        self.assertIn("certificate verify failed", reply["reason"])
        self.assertEqual(self.server.requests, [])

    async def test_verify_none_skips_certificate_checks(self) -> None:
        """verify_options VERIFY_NONE accepts the untrusted certificate, as the seed did."""
        [reply] = await run_child(self, [{"cmd": "http.get", "url": self.server.url("/echo"),
                                          "verify_options": ["VERIFY_NONE"], "ssl_method": "TLSv1_2"}])
        self.assertTrue(reply["success"], reply)
        self.assertEqual(json.loads(reply["body"])["uri"], "/echo")

    async def test_trusted_certificate_and_ssl_method(self) -> None:
        """With the certificate trusted, the request verifies, and a pinned protocol version still connects."""
        from twisted.internet.ssl import trustRootFromCertificates

        from vxsandbox_core import Sandbox
        from vxsandbox_core.testing import (
            RecordingBroker,
            hooks_with,
            make_user_message,
            python_child,
            python_worker_config,
        )
        requests = [{"cmd": "http.get", "url": self.server.url("/echo"), "ssl_method": method}
                    for method in ("SSLv23", "TLSv1_2", "TLSv1_3")]
        worker = Sandbox(python_worker_config(python_child(requests), sandbox={
            "http": {"cls": "http", "allowed_hosts": ["127.0.0.1"]}}), broker=RecordingBroker(), hooks=hooks_with())
        await worker.setup()
        worker.resources.resources["http"].trust_root = trustRootFromCertificates([self.server.certificate])
        self.assertEqual(await worker.process_message(make_user_message()), "ok")
        replies = worker.resources.resources["record"].replies()
        self.assertEqual([r["success"] for r in replies], [True, True, True], replies)


class HeaderLimitTests(ServerTestCase):
    """Response headers are bounded like the body: by count and by bytes, each failing with a reason."""

    async def test_too_many_header_lines_fail_the_request(self) -> None:
        """150 short headers pass max_headers (100 by default); the reply says so."""
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/headers/150/10")}])
        self.assertFalse(reply["success"])
        self.assertIn("response has more than max_headers (100) header lines", reply["reason"])

    async def test_too_many_header_bytes_fail_the_request(self) -> None:
        """40 headers of 4000 bytes pass max_header_bytes (64 KiB by default); the reply says so."""
        [reply] = await self.drive([{"cmd": "http.get", "url": self.server.url("/headers/40/4000")}])
        self.assertFalse(reply["success"])
        self.assertIn("response headers exceed max_header_bytes (65536 bytes)", reply["reason"])

    async def test_header_flood_is_cut_off(self) -> None:
        """2000 headers of 8 KB (16 MB) end the request with a reason, and the next request still works."""
        flood, ok = await self.drive([{"cmd": "http.get", "url": self.server.url("/headers/2000/8000")},
                                      {"cmd": "http.get", "url": self.server.url("/headers/3/10")}])
        self.assertFalse(flood["success"])
        self.assertIn("max_header", flood["reason"])
        self.assertTrue(ok["success"], ok)
        self.assertEqual(ok["headers"]["X-H2"], ["h" * 10])

    async def test_header_limits_are_configurable(self) -> None:
        """Raised limits let the same responses through with every header."""
        many, big = await self.drive([{"cmd": "http.get", "url": self.server.url("/headers/150/10")},
                                      {"cmd": "http.get", "url": self.server.url("/headers/40/4000")}],
                                     http={"max_headers": 200, "max_header_bytes": 256 * 1024})
        self.assertTrue(many["success"], many)
        self.assertEqual(len([h for h in many["headers"] if h.startswith("X-H")]), 150)
        self.assertTrue(big["success"], big)


class BudgetTests(ServerTestCase):
    """Concurrent requests are budgeted per worker and per tenant; past a budget a request is refused at once."""

    def send(self, resource: HttpClientResource, sandbox_id: str, n: int) -> list[Any]:
        """Start ``n`` slow GETs for ``sandbox_id``; return the fake APIs whose ``sent`` gets the replies."""
        from vxsandbox_core.testing import FakeSandboxApi
        apis = []
        for i in range(n):
            api = FakeSandboxApi(sandbox_id=sandbox_id)
            api.resources.add("http", resource)
            api.dispatch_request({"cmd": "http.get", "cmd_id": str(i), "reply": False,
                                  "url": self.server.url("/slow")})
            apis.append(api)
        return apis

    def refusals(self, apis: list[Any]) -> list[str]:
        return [a.sent[0]["reason"] for a in apis if a.sent and not a.sent[0]["success"]]

    async def test_tenant_budget_refuses_the_excess_at_once(self) -> None:
        """With 5 per tenant, 30 slow requests give 25 immediate refusals naming the key; another tenant goes on."""
        resource = HttpClientResource("http", None, {"cls": "http", "allowed_hosts": ["127.0.0.0/8"],
                                                     "max_concurrent_requests_per_tenant": 5, "timeout": 5})
        self.addCleanup(resource.teardown)
        flood = self.send(resource, "flood", 30)
        refused = self.refusals(flood)
        self.assertEqual(len(refused), 25)
        self.assertIn("max_concurrent_requests_per_tenant (5)", refused[0])
        other = self.send(resource, "other", 1)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.refusals(other), [])
        self.assertEqual(len(self.server.slow), 6)

    async def test_worker_budget_is_shared_by_all_tenants(self) -> None:
        """With 8 per worker, tenants together get 8 in flight; the rest are refused naming the key, then freed."""
        resource = HttpClientResource("http", None, {"cls": "http", "allowed_hosts": ["127.0.0.0/8"],
                                                     "max_concurrent_requests": 8, "timeout": 0.5})
        apis = [api for t in range(4) for api in self.send(resource, f"t{t}", 3)]
        refused = self.refusals(apis)
        self.assertEqual(len(refused), 4)
        self.assertIn("max_concurrent_requests (8)", refused[0])
        # Timed-out requests give their places back.
        await deferLater(reactor, 1.5, lambda: None)
        self.assertTrue(all(a.sent for a in apis))
        later = self.send(resource, "t0", 8)
        self.assertEqual(self.refusals(later), [])
        resource.teardown()

    def test_budget_defaults(self) -> None:
        """The budgets default to 200 per worker and 20 per tenant."""
        resource = HttpClientResource("http", None, {"cls": "http"})
        self.assertEqual((resource.options.max_concurrent_requests,
                          resource.options.max_concurrent_requests_per_tenant), (200, 20))
