"""Tests of the kv commands shared by both backends: each backend's test module runs them all.

Every request travels through a real child process and the generic worker,
as a sandbox would send it.
"""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, threads
from twisted.internet.defer import ensureDeferred, gatherResults

from vxsandbox_core import CommandError

from .helpers import KVWorkerMixin, sleep, warnings_in

JSON_VALUES: list[Any] = [{"name": "Zoë", "tags": ["a", "b"], "n": 1.5}, [1, [2, [3]]], "plain", "ünïcödé ✓",
                          0, -7, 2**62, 3.25, True, False, None, {}, []]

# Text the app could really send (valid Unicode), rich in the scheme's special characters.
_TEXT = st.text(alphabet=st.sampled_from("ab#%23") | st.characters(codec="utf-8"),
                min_size=1, max_size=12)


def reasons(replies: list[dict[str, Any]]) -> list[str | None]:
    return [r.get("reason") for r in replies]


class KVCommandCases(KVWorkerMixin):
    """Every command and every error reply of the kv resource; mixed into a trial TestCase per backend."""

    async def racing_resources(self, **options: Any) -> list[Any]:
        """kv resources sharing one store, each with its own connection (one, for the memory backend)."""
        worker = await self.make_worker(**options)
        return [worker.resources.resources["kv"]]

    async def test_set_then_get_returns_every_json_value(self) -> None:
        """Values of every JSON type come back from get exactly as set, and a missing key reads null."""
        worker = await self.make_worker()
        requests: list[dict[str, Any]] = [{"cmd": "kv.set", "key": f"k{i}", "value": v}
                                          for i, v in enumerate(JSON_VALUES)]
        requests += [{"cmd": "kv.get", "key": f"k{i}"} for i in range(len(JSON_VALUES))]
        requests.append({"cmd": "kv.get", "key": "never-set"})
        replies = await self.run_child(worker, requests)
        assert all(r["success"] for r in replies), replies
        n = len(JSON_VALUES)
        assert [r["value"] for r in replies[n:2 * n]] == JSON_VALUES
        assert replies[-1]["value"] is None

    async def test_set_overwrites_and_clears_expiry(self) -> None:
        """A second set replaces the value, and a set without seconds makes an expiring key permanent."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "kv.set", "key": "k", "value": 1, "seconds": 1},
            {"cmd": "kv.set", "key": "k", "value": 2, "seconds": None},
        ])
        assert [r["success"] for r in replies] == [True, True]
        await sleep(1.2)
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"}])
        assert replies[0]["value"] == 2

    async def test_seconds_expires_the_key(self) -> None:
        """A key set with seconds reads back until it expires and null after."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": "k", "value": "v", "seconds": 1},
                                                {"cmd": "kv.get", "key": "k"}])
        assert [r["success"] for r in replies] == [True, True]
        assert replies[1]["value"] == "v"
        await sleep(1.2)
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"},
                                                {"cmd": "kv.delete", "key": "k"}])
        assert replies[0]["value"] is None
        assert replies[1]["existed"] is False

    async def test_delete_reports_whether_the_key_existed(self) -> None:
        """delete answers existed true for a stored key, then false, and the key reads null after."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "kv.set", "key": "k", "value": "v"},
            {"cmd": "kv.delete", "key": "k"},
            {"cmd": "kv.delete", "key": "k"},
            {"cmd": "kv.get", "key": "k"},
        ])
        assert all(r["success"] for r in replies), replies
        assert [replies[1]["existed"], replies[2]["existed"], replies[3]["value"]] == [True, False, None]

    async def test_incr_counts_from_zero_by_amount(self) -> None:
        """incr starts a missing key at 0, adds 1 by default or amount, and get reads the integer."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [
            {"cmd": "kv.incr", "key": "n"},
            {"cmd": "kv.incr", "key": "n", "amount": 5},
            {"cmd": "kv.incr", "key": "n", "amount": -10},
            {"cmd": "kv.get", "key": "n"},
            {"cmd": "kv.set", "key": "big", "value": 2**62},
            {"cmd": "kv.incr", "key": "big", "amount": 2**62 - 1},
        ])
        assert all(r["success"] for r in replies), replies
        assert [r["value"] for r in replies[:4]] == [1, 6, -4, -4]
        assert replies[5]["value"] == 2**63 - 1, replies[5]

    async def test_incr_keeps_the_expiry_of_an_existing_key(self) -> None:
        """incr on a key set with seconds does not make it permanent."""
        worker = await self.make_worker()
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": "n", "value": 1, "seconds": 1},
                                                {"cmd": "kv.incr", "key": "n"}])
        assert replies[1]["value"] == 2
        await sleep(1.2)
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "n"}])
        assert replies[0]["value"] is None

    async def test_every_bad_field_gets_a_reason_naming_it(self) -> None:
        """Each malformed request fails with success false and a reason naming the bad field."""
        worker = await self.make_worker(max_key_length=8, max_value_size=32)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"cmd": "kv.set", "value": 1}, "'key' is required"),
            ({"cmd": "kv.set", "key": 5, "value": 1}, "'key' must be a string, got number 5"),
            ({"cmd": "kv.set", "key": None, "value": 1}, "'key' must be a string, got null"),
            ({"cmd": "kv.set", "key": "", "value": 1}, "'key' must not be empty"),
            ({"cmd": "kv.set", "key": "123456789", "value": 1},
             "'key' is 9 bytes long; the limit is 8 bytes (max_key_length)"),
            ({"cmd": "kv.set", "key": "ééééé", "value": 1}, "'key' is 10 bytes long"),
            ({"cmd": "kv.set", "key": "k"}, "'value' is required"),
            ({"cmd": "kv.set", "key": "k", "value": "x" * 40},
             "'value' is 42 bytes as JSON; the limit is 32 bytes (max_value_size)"),
            ({"cmd": "kv.set", "key": "k", "value": 1, "seconds": "10"},
             "'seconds' must be an integer or null, got string \"10\""),
            ({"cmd": "kv.set", "key": "k", "value": 1, "seconds": 1.5}, "'seconds' must be an integer or null"),
            ({"cmd": "kv.set", "key": "k", "value": 1, "seconds": True}, "'seconds' must be an integer or null"),
            ({"cmd": "kv.set", "key": "k", "value": 1, "seconds": 0}, "'seconds' must be between 1 and"),
            ({"cmd": "kv.set", "key": "k", "value": 1, "seconds": -5}, "'seconds' must be between 1 and"),
            ({"cmd": "kv.get"}, "'key' is required"),
            ({"cmd": "kv.get", "key": ["k"]}, "'key' must be a string, got array"),
            ({"cmd": "kv.delete", "key": {"k": 1}}, "'key' must be a string, got object"),
            ({"cmd": "kv.incr"}, "'key' is required"),
            ({"cmd": "kv.incr", "key": "n", "amount": "2"}, "'amount' must be an integer, got string"),
            ({"cmd": "kv.incr", "key": "n", "amount": 1.5}, "'amount' must be an integer, got number 1.5"),
            ({"cmd": "kv.incr", "key": "n", "amount": None}, "'amount' must be an integer, got null"),
            ({"cmd": "kv.incr", "key": "n", "amount": False}, "'amount' must be an integer, got boolean"),
            ({"cmd": "kv.incr", "key": "n", "amount": 2**63}, "'amount' must be a signed 64-bit integer"),
        ]
        replies = await self.run_child(worker, [c for c, _ in cases])
        for (request, expected), reply in zip(cases, replies, strict=True):
            assert reply["success"] is False, (request, reply)
            assert expected in reply["reason"], (request, reply["reason"])
        # nothing was written by any of them
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"}, {"cmd": "kv.get", "key": "n"}])
        assert [r["value"] for r in replies] == [None, None]

    async def test_incr_of_a_non_integer_fails_with_a_reason(self) -> None:
        """incr refuses strings, floats, booleans, objects and integers out of 64-bit range, and overflow."""
        worker = await self.make_worker()
        stored: list[Any] = ["5", 1.5, 2.0, True, {"n": 1}, [1], None, 2**64]
        requests: list[dict[str, Any]] = []
        for i, value in enumerate(stored):
            requests += [{"cmd": "kv.set", "key": f"k{i}", "value": value}, {"cmd": "kv.incr", "key": f"k{i}"}]
        requests += [{"cmd": "kv.set", "key": "max", "value": 2**63 - 1}, {"cmd": "kv.incr", "key": "max"},
                     {"cmd": "kv.get", "key": "max"}, {"cmd": "kv.get", "key": "k0"}]
        replies = await self.run_child(worker, requests)
        for i in range(len(stored)):
            assert replies[2 * i]["success"] is True
            reply = replies[2 * i + 1]
            assert reply["success"] is False
            assert reply["reason"] == f"cannot incr 'key' 'k{i}': its stored value is not an integer"
        overflow = replies[-3]
        assert overflow["success"] is False
        assert "would not fit in a signed 64-bit integer" in overflow["reason"]
        assert replies[-2]["value"] == 2**63 - 1
        assert replies[-1]["value"] == "5"

    async def test_quota_counts_new_keys_and_expired_keys_free_their_slot(self) -> None:
        """The 100th key succeeds, the 101st fails, overwriting at the limit succeeds, an expired key frees a slot."""
        worker = await self.make_worker()
        requests: list[dict[str, Any]] = [{"cmd": "kv.set", "key": "k0", "value": 0, "seconds": 1}]
        requests += [{"cmd": "kv.set", "key": f"k{i}", "value": i} for i in range(1, 100)]
        requests += [
            {"cmd": "kv.set", "key": "k100", "value": 100},
            {"cmd": "kv.incr", "key": "counter"},
            {"cmd": "kv.set", "key": "k50", "value": "overwritten"},
            {"cmd": "kv.incr", "key": "k51"},
            {"cmd": "kv.delete", "key": "k99"},
            {"cmd": "kv.set", "key": "k99b", "value": "fits again"},
        ]
        replies = await self.run_child(worker, requests)
        assert all(r["success"] for r in replies[:100]), [r for r in replies[:100] if not r["success"]]
        too_many = replies[100:102]
        assert [r["success"] for r in too_many] == [False, False]
        assert all(r["reason"].startswith("Too many keys: the sandbox already has 100 keys and may have at most "
                                          "100") for r in too_many), too_many
        assert [r["success"] for r in replies[102:]] == [True, True, True, True]
        assert replies[103]["value"] == 52
        await sleep(1.2)
        replies = await self.run_child(worker, [
            {"cmd": "kv.get", "key": "k0"},
            {"cmd": "kv.set", "key": "k100", "value": 100},
            {"cmd": "kv.set", "key": "k101", "value": 101},
        ])
        assert replies[0]["value"] is None
        assert replies[1]["success"] is True
        assert replies[2]["success"] is False and replies[2]["reason"].startswith("Too many keys")

    async def test_warning_past_the_soft_limit_reaches_owner_and_operator(self) -> None:
        """Crossing keys_per_user_soft logs one warning (tenant, count, limit) to the owner and the operator."""
        worker = await self.make_worker(keys_per_user_hard=5, keys_per_user_soft=3)
        with self.assertLogs("vxsandbox.sandbox", logging.WARNING) as operator:  # type: ignore[attr-defined]
            replies = await self.run_child(worker, [{"cmd": "kv.set", "key": f"k{i}", "value": i} for i in range(5)]
                                           + [{"cmd": "kv.set", "key": "k4", "value": "again"},
                                              {"cmd": "kv.set", "key": "k5", "value": 5}])
        assert [r["success"] for r in replies] == [True] * 6 + [False]
        owner = warnings_in(self.owner_log(worker))
        soft = [w for w in owner if "soft limit" in w]
        assert len(soft) == 1, owner
        assert "'tenant-a'" in soft[0] and "now has 4 keys" in soft[0] and "soft limit of 3" in soft[0]
        assert "hard limit of 5" in soft[0]
        assert any("Too many keys" in w for w in owner)
        assert sum("soft limit" in line for line in operator.output) == 1

    async def test_soft_limit_warns_again_after_falling_back_below_it(self) -> None:
        """Dropping back to the soft limit and crossing it again is a new crossing with its own warning."""
        worker = await self.make_worker(keys_per_user_hard=5, keys_per_user_soft=2)
        await self.run_child(worker, [{"cmd": "kv.set", "key": f"k{i}", "value": i} for i in range(4)]
                             + [{"cmd": "kv.delete", "key": "k3"}, {"cmd": "kv.delete", "key": "k2"},
                                {"cmd": "kv.set", "key": "k2", "value": 2}, {"cmd": "kv.set", "key": "k3", "value": 3}])
        soft = [w for w in warnings_in(self.owner_log(worker)) if "soft limit" in w]
        assert len(soft) == 2, soft
        assert all("now has 3 keys" in w for w in soft)

    async def test_deprecated_keys_per_user_still_limits(self) -> None:
        """keys_per_user still sets the hard limit, with a deprecation warning in the log."""
        with self.assertLogs("vxsandbox.config", logging.WARNING) as logs:  # type: ignore[attr-defined]
            worker = await self.make_worker(keys_per_user=2)
        assert "deprecated" in logs.output[0] and "keys_per_user_hard" in logs.output[0]
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": k, "value": 1} for k in "abc"])
        assert [r["success"] for r in replies] == [True, True, False]

    async def test_seed_colliding_pairs_stay_apart(self) -> None:
        """Sandbox 'a' key 'b#x' and sandbox 'a#b' key 'x' (one key in the seed) hold separate values."""
        worker = await self.make_worker()
        await self.run_child(worker, [{"cmd": "kv.set", "key": "b#x", "value": "from a"}], sandbox_id="a")
        await self.run_child(worker, [{"cmd": "kv.set", "key": "x", "value": "from a#b"}], sandbox_id="a#b")
        first = await self.run_child(worker, [{"cmd": "kv.get", "key": "b#x"}], sandbox_id="a")
        second = await self.run_child(worker, [{"cmd": "kv.get", "key": "x"}], sandbox_id="a#b")
        assert (first[0]["value"], second[0]["value"]) == ("from a", "from a#b")

    async def test_each_sandbox_has_its_own_quota(self) -> None:
        """A full sandbox does not stop another sandbox_id from adding keys."""
        worker = await self.make_worker(keys_per_user_hard=2)
        full = await self.run_child(worker, [{"cmd": "kv.set", "key": k, "value": 1} for k in "abc"], "s1")
        other = await self.run_child(worker, [{"cmd": "kv.set", "key": k, "value": 1} for k in "ab"], "s2")
        assert [r["success"] for r in full] == [True, True, False]
        assert [r["success"] for r in other] == [True, True]

    async def test_concurrent_new_keys_never_overshoot_the_quota(self) -> None:
        """Thirty simultaneous new keys against a limit of ten (from every worker sharing the store): ten stored."""
        resources = await self.racing_resources(keys_per_user_hard=10)
        api = self.fake_api("racer")

        async def one(i: int) -> bool:
            kv = resources[i % len(resources)]
            try:
                await kv.dispatch_request(api, {"cmd": "set", "cmd_id": str(i), "key": f"k{i}", "value": i})
            except CommandError as e:
                assert e.reason.startswith("Too many keys")
                return False
            return True

        results = await gatherResults([ensureDeferred(one(i)) for i in range(30)])
        assert sum(results) == 10
        for kv in resources:
            assert await kv.backend.count("racer") == 10  # type: ignore[attr-defined]

    async def test_two_sandbox_ids_never_see_each_others_keys(self) -> None:
        """Property: whatever two distinct sandbox_ids write, neither reads, counts or deletes the other's keys."""
        worker = await self.make_worker(keys_per_user_hard=1000)
        kv: Any = worker.resources.resources["kv"]

        def call(sandbox_id: str, **command: Any) -> Any:
            api = self.fake_api(sandbox_id)
            return threads.blockingCallFromThread(
                reactor, kv.dispatch_request, api, dict(command, cmd_id="1"))

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(a=_TEXT, keys=st.lists(_TEXT, min_size=1, max_size=5, unique=True), data=st.data())
        def prop(a: str, keys: list[str], data: st.DataObject) -> None:
            # b is often a's near miss: the seed's collision (a + "#" + the head of a's key, with the
            # key's tail as b's key) or a '#' written as its escape
            head, _, tail = keys[0].partition("#")
            b = data.draw(_TEXT | st.sampled_from([f"{a}#{head}", a.replace("#", "%23"), a.replace("%", "%25")]))
            if a == b:
                return
            for k in keys:
                call(a, cmd="set", key=k, value=["a", k])
            b_keys = data.draw(st.lists(_TEXT | st.sampled_from(keys + [tail or "t"]), max_size=5, unique=True))
            for k in keys + b_keys:
                assert call(b, cmd="get", key=k)["value"] is None
            for k in b_keys:
                call(b, cmd="set", key=k, value=["b", k])
                assert call(b, cmd="get", key=k)["value"] == ["b", k]
            for k in keys:
                assert call(a, cmd="get", key=k)["value"] == ["a", k]
            for k in b_keys:
                assert call(b, cmd="delete", key=k)["existed"] is True
            for k in keys:
                assert call(a, cmd="get", key=k)["value"] == ["a", k]
                assert call(a, cmd="delete", key=k)["existed"] is True

        await threads.deferToThread(prop)
