"""The in-memory backend on a task.Clock: expiry to the millisecond, counts and quotas."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vxsandbox_core import CommandError
from vxsandbox_core.testing import FakeSandboxApi
from vxsandbox_resources_kv import (
    IncrementOverflowError,
    MemoryBackend,
    NotAnIntegerError,
    QuotaExceededError,
    RedisResource,
    WriteResult,
)


class FakeWorker:
    """Just the reactor a resource takes its clock from."""

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock


class MemoryBackendTests(SynchronousTestCase):
    """The backend's semantics with time under the test's control."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = MemoryBackend(self.clock)

    def done(self, coroutine: Any) -> Any:
        return self.successResultOf(ensureDeferred(coroutine))

    def fail_with(self, coroutine: Any, error: type[Exception]) -> Exception:
        d: Deferred[Any] = ensureDeferred(coroutine)
        return self.failureResultOf(d, error).value

    def test_a_key_lives_exactly_its_seconds(self) -> None:
        """A key set for 2 s still reads at 2.000 s and is gone at 2.001 s, like Redis."""
        self.done(self.backend.set("s", "k", '"v"', 2, 100))
        self.clock.advance(2)
        assert self.done(self.backend.get("s", "k")) == '"v"'
        self.clock.advance(0.001)
        assert self.done(self.backend.get("s", "k")) is None
        assert self.done(self.backend.count("s")) == 0

    def test_writes_report_new_keys_and_the_count(self) -> None:
        """Only a key that did not exist counts as created; overwrites keep the count."""
        assert self.done(self.backend.set("s", "a", "1", None, 100)) == WriteResult(True, 1)
        assert self.done(self.backend.set("s", "a", "2", None, 100)) == WriteResult(False, 1)
        assert self.done(self.backend.incr("s", "b", 3, 100)) == (3, WriteResult(True, 2))
        assert self.done(self.backend.incr("s", "a", 3, 100)) == (5, WriteResult(False, 2))

    def test_expired_keys_free_their_slots(self) -> None:
        """At the limit a new key fails until an expiring key's time is up."""
        self.done(self.backend.set("s", "short", "1", 5, 2))
        self.done(self.backend.set("s", "long", "1", None, 2))
        error = self.fail_with(self.backend.set("s", "new", "1", None, 2), QuotaExceededError)
        assert (error.count, error.limit) == (2, 2)  # type: ignore[attr-defined]
        self.clock.advance(5.001)
        assert self.done(self.backend.set("s", "new", "1", None, 2)) == WriteResult(True, 2)

    def test_an_expired_key_is_new_again(self) -> None:
        """Writing a key whose expiry has passed creates it afresh, and incr starts it from zero."""
        self.done(self.backend.set("s", "n", "41", 1, 100))
        self.clock.advance(1.5)
        assert self.done(self.backend.incr("s", "n", 1, 100)) == (1, WriteResult(True, 1))

    def test_incr_keeps_expiry_and_refuses_non_integers(self) -> None:
        """incr keeps an existing key's expiry; a non-integer or an overflow is an error."""
        self.done(self.backend.set("s", "n", "1", 3, 100))
        self.done(self.backend.incr("s", "n", 1, 100))
        self.clock.advance(3.001)
        assert self.done(self.backend.get("s", "n")) is None
        self.done(self.backend.set("s", "f", "1.0", None, 100))
        self.fail_with(self.backend.incr("s", "f", 1, 100), NotAnIntegerError)
        self.done(self.backend.set("s", "m", str(2**63 - 1), None, 100))
        self.fail_with(self.backend.incr("s", "m", 1, 100), IncrementOverflowError)
        assert self.done(self.backend.get("s", "m")) == str(2**63 - 1)

    def test_delete_of_an_expired_key_reports_it_missing(self) -> None:
        """delete says existed false for a key whose time is up."""
        self.done(self.backend.set("s", "k", "1", 1, 100))
        self.clock.advance(2)
        assert self.done(self.backend.delete("s", "k")) is False


class MemoryResourceClockTests(SynchronousTestCase):
    """The resource with ``backend: memory`` takes time from the worker's reactor."""

    def test_expiry_follows_the_workers_reactor(self) -> None:
        """A value set for 10 s through the resource disappears when the worker's clock passes 10 s."""
        clock = Clock()
        resource = RedisResource("kv", FakeWorker(clock), {"cls": "kv", "backend": "memory"})
        api = FakeSandboxApi(sandbox_id="s")

        def call(**command: Any) -> Any:
            return self.successResultOf(resource.dispatch_request(api, dict(command, cmd_id="1")))

        call(cmd="set", key="k", value=[1], seconds=10)
        clock.advance(9.9)
        assert call(cmd="get", key="k")["value"] == [1]
        clock.advance(0.2)
        assert call(cmd="get", key="k")["value"] is None

    def test_soft_warning_goes_to_the_api(self) -> None:
        """Crossing the soft limit is reported through the run's api once, not again for later keys."""
        resource = RedisResource("kv", FakeWorker(Clock()),
                                 {"cls": "kv", "backend": "memory", "keys_per_user_hard": 3,
                                  "keys_per_user_soft": 1})
        api = FakeSandboxApi(sandbox_id="s")
        for key in ("a", "b", "c", "c"):
            self.successResultOf(resource.dispatch_request(api, {"cmd": "set", "cmd_id": "1", "key": key,
                                                                 "value": 1}))
        assert [msg for _, msg in api.logs] == [
            "kv: sandbox 's' now has 2 keys (after adding 'b'), past the soft limit of 1 (keys_per_user_soft); "
            "at the hard limit of 3 (keys_per_user_hard) new keys fail"]
        failure = self.failureResultOf(resource.dispatch_request(
            api, {"cmd": "set", "cmd_id": "1", "key": "d", "value": 1}), CommandError)
        assert failure.value.reason == ("Too many keys: the sandbox already has 3 keys and may have at most 3 "
                                        "(keys_per_user_hard); cannot add 'key' 'd'")
