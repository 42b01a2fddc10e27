"""What the runner builds inside the app's context behaves as apps expect: timers, console, api, errors.

The runner makes ``api``, ``console`` and the timer functions inside the
app's own realm (see tests/faults/test_realm_escape_integration.py for why);
these tests check they still do what the Vumi toolkit and Node apps rely on.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsSandbox

from .helpers import js_config, make_worker

pytestmark = pytest.mark.node

TIMERS_APP = """
api.on_inbound_message = function (command) {
    var api = this, seen = [];
    var cancelled = setTimeout(function () { seen.push('cancelled timeout fired'); }, 5);
    clearTimeout(cancelled);
    var ticks = 0;
    var interval = setInterval(function (step) {
        ticks += step;
        if (ticks === 3) { clearInterval(interval); }
    }, 2, 1);
    setImmediate(function (a, b) { seen.push('immediate ' + a + b); }, 'x', 'y');
    var dropped = setImmediate(function () { seen.push('cleared immediate fired'); });
    clearImmediate(dropped);
    setTimeout(function (word) {
        seen.push('timeout ' + word + ' ticks ' + ticks + ' ids ' + typeof cancelled + ' ' + (cancelled !== interval));
        api.log_info(seen.join('; '), function () { api.done(); });
    }, 40, 'arg');
};
"""

CONSOLE_APP = r"""
function Point(x, y) { this.x = x; this.y = y; }
api.on_inbound_message = function (command) {
    var cyclic = {name: 'c'};
    cyclic.self = cyclic;
    console.log('%s is %d years, %i%% sure, %f, %j', 'Ann', 42, 7.9, '1.5', {a: [1, 'b']});
    console.info('plain', 1, -0, 2n, true, null, undefined, Symbol('s'), 'text');
    console.debug({a: 1, 'b-c': 'it\'s', nested: {deep: {deeper: {deepest: 1}}}}, [1, [2, [3]]], []);
    console.warn(new Point(1, 2), Object.create(null), cyclic, function named() {}, function () {});
    console.error('%o and %O', {k: 'v'}, [1], 'rest', new Date(0), /re/g);
    var err = new TypeError('shown with its stack');
    console.log(err);
    this.done();
};
"""

API_APP = r"""
api.on_inbound_message = function (command) {
    var api = this, results = [];
    var id = api.request('log.info', {msg: 'first', cmd_id: 'forged', reply: true}, function (reply) {
        results.push('reply this is api: ' + (this === api) + ', success ' + reply.success +
                     ', cmd_id matches: ' + (reply.cmd_id === id));
        try {
            api.request('log.info', {msg: 'x', n: 1n});
        } catch (e) {
            results.push('BigInt refused: ' + (e instanceof TypeError));
        }
        var cyclic = {};
        cyclic.self = cyclic;
        try {
            api.log_info(cyclic);
            api.request('log.info', {c: cyclic});
        } catch (e) {
            results.push('cyclic refused: ' + (e instanceof TypeError));
        }
        try {
            setTimeout('code');
        } catch (e) {
            results.push('string timer refused: ' + (e instanceof TypeError));
        }
        api.log('via api.log at warning', 'warning');
        api.log_info(results.join('; '), function () {
            api.done();
            api.done();
        });
    });
    results.push('request returns a string id: ' + (typeof id === 'string'));
};
"""


class RunnerApiTests(TestCase):
    """The runner's api, console and timers, made inside the app's realm."""

    timeout = 60

    async def run_app(self, javascript: str, outcome: str = "ok", **extra: Any) -> list[tuple[int, str]]:
        worker = make_worker(JsSandbox, js_config(javascript, **extra))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        await worker.setup()
        self.assertEqual(await worker.process_message(make_user_message()), outcome)
        return [(level, msg) for _, level, msg in worker.resources.resources["log"].lines]

    async def test_timers(self) -> None:
        """Timeouts, intervals and immediates run with their arguments and stop when cleared."""
        lines = await self.run_app(TIMERS_APP)
        self.assertIn((logging.INFO, "immediate xy; timeout arg ticks 3 ids number true"), lines)

    async def test_console_formats_like_util_format(self) -> None:
        """console.* substitutes placeholders and shows objects, arrays, classes and cycles on one line."""
        lines = await self.run_app(CONSOLE_APP)
        self.assertEqual(lines[:5], [
            (logging.INFO, "Ann is 42 years, 7% sure, 1.5, {\"a\":[1,\"b\"]}"),
            (logging.INFO, "plain 1 -0 2n true null undefined Symbol(s) text"),
            (logging.DEBUG, "{ a: 1, 'b-c': 'it\\'s', nested: { deep: { deeper: [Object] } } } "
                            "[ 1, [ 2, [ 3 ] ] ] []"),
            (logging.WARNING, "Point { x: 1, y: 2 } [Object: null prototype] {} "
                              "{ name: 'c', self: [Circular] } [Function: named] [Function (anonymous)]"),
            (logging.ERROR, "{ k: 'v' } and [ 1 ] rest 1970-01-01T00:00:00.000Z /re/g"),
        ])
        level, error = lines[5]
        self.assertEqual(level, logging.INFO)
        self.assertTrue(error.startswith("TypeError: shown with its stack\n    at "), error)
        self.assertIn("app.js:", error)
        self.assertNotIn("runner.js", error)

    async def test_api_requests_replies_and_refusals(self) -> None:
        """Requests get string ids and replies with ``this`` = api; values JSON cannot carry throw a TypeError."""
        lines = await self.run_app(API_APP)
        self.assertIn((logging.WARNING, "via api.log at warning"), lines)
        self.assertIn((logging.INFO, "request returns a string id: true; reply this is api: true, success true, "
                                     "cmd_id matches: true; BigInt refused: true; cyclic refused: true; "
                                     "string timer refused: true"), lines)
        self.assertEqual([m for _, m in lines].count("Done."), 1)

    async def test_app_context_may_replace_console_but_not_api(self) -> None:
        """``app_context`` globals are added after the runner's: they may replace ``console``, never ``api``."""
        app = """
        api.on_inbound_message = function (command) {
            console.log('quiet');
            this.log_info('api is the runner\\'s: ' + (typeof api.done === 'function'), function () { this.done(); });
        };
        """
        lines = await self.run_app(app, app_context="{console: {log: function () {}}, api: null}")
        self.assertEqual([m for _, m in lines], ["api is the runner's: true", "Done."])

    async def test_a_throw_in_a_reply_callback_is_reported_with_app_frames(self) -> None:
        """An exception in a reply callback ends the run with the app's stack, not the runner's."""
        app = """
        api.on_inbound_message = function (command) {
            this.log_info('asking', function () {
                null.boom;
            });
        };
        """
        lines = await self.run_app(app, outcome="error")
        errors = [m for level, m in lines if level == logging.ERROR]
        self.assertTrue(errors[0].startswith("app callback for log.info failed: TypeError: Cannot read properties "
                                             "of null (reading 'boom')\n    at "), errors)
        self.assertIn("app.js:4", errors[0])
        self.assertNotIn("runner.js", errors[0])
