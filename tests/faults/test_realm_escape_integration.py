"""App code reaching the runner's realm: every route to the runner's ``Function``, ``process`` or global finds nothing.

Each app below hands everything the runner gives it (functions, objects,
replies, errors, callers, arguments of callbacks the runner makes) to
``reach``, which walks its prototype chain and tries each constructor's
``Function`` on ``return process``. In the app's own realm there is no
``process``; in the runner's there is, and with it ``require`` and
``kill``. The app logs ``escaped: [...]`` with the routes that worked; the
test reads that line. Tried under the default ``js`` worker config
(``isolation: none``, Node's permission model on, no ``app_context``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from vxsandbox_core.testing import make_user_message
from vxsandbox_js import JsSandbox

from ..js.helpers import js_config, make_worker

pytestmark = pytest.mark.node

#: Shared by every probing app: ``probe(name, value)`` records ``name`` when ``value`` leads to ``process``.
PRELUDE = r"""
var escaped = [];
function viaFunction(F) {
    try {
        var p = F('return typeof process === "object" ? process : undefined')();
        return p !== null && typeof p === 'object' && typeof p.pid === 'number';
    } catch (e) {
        return false;
    }
}
function reach(x) {
    for (var i = 0; i < 8 && x !== null && x !== undefined; i++) {
        try {
            if (typeof x === 'function' && viaFunction(x.constructor)) { return true; }
            if (x.constructor && viaFunction(x.constructor.constructor)) { return true; }
            x = Object.getPrototypeOf(x);
        } catch (e) {
            return false;
        }
    }
    return false;
}
function probe(name, x) {
    if (reach(x) && escaped.indexOf(name) < 0) { escaped.push(name); }
}
function probeAll(name, values) {
    for (var i = 0; i < values.length; i++) { probe(name + '[' + i + ']', values[i]); }
}
function caught(name, f) {
    try { f(); } catch (e) { probe(name, e); }
}
function finish(api) {
    api.log_info('escaped: [' + escaped.join(', ') + ']', function () { api.done(); });
}
"""


def app(body: str) -> str:
    return PRELUDE + body


#: Everything the runner puts in the app's globals, and the global object itself.
GLOBALS_APP = app(r"""
var top = this;
api.on_inbound_message = function (command) {
    var api = this;
    probe('this at top level', top);
    probe('globalThis', globalThis);
    probe('globalThis.constructor', globalThis.constructor);
    probe('prototype of globalThis', Object.getPrototypeOf(globalThis));
    probe('api', api);
    probe('api.request', api.request);
    probe('api.log_info', api.log_info);
    probe('api.log', api.log);
    probe('api.done', api.done);
    probe('api.on_unknown_command', api.on_unknown_command);
    probe('prototype of api', Object.getPrototypeOf(api));
    probe('command', command);
    probe('command.msg', command.msg);
    probe('console', console);
    probe('console.log', console.log);
    ['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate']
        .forEach(function (name) { probe(name, globalThis[name]); });
    var timeout = setTimeout(function () {}, 1000);
    probe('setTimeout handle', timeout);
    clearTimeout(timeout);
    var immediate = setImmediate(function () {});
    probe('setImmediate handle', immediate);
    clearImmediate(immediate);
    Object.getOwnPropertyNames(globalThis).forEach(function (name) {
        try { probe('global ' + name, globalThis[name]); } catch (e) { probe('reading global ' + name, e); }
    });
    finish(api);
};
""")

#: A reply, ``this`` in its callback, and the callers of every callback the runner makes.
REPLY_APP = app(r"""
api.on_inbound_message = function (command) {
    var api = this;
    probe('caller of the handler', arguments.callee.caller);
    api.request('log.info', {msg: 'asking'}, function (reply) {
        probe('reply', reply);
        probe('reply.constructor.constructor', reply.constructor.constructor);
        probe('this in a reply callback', this);
        probe('caller of a reply callback', arguments.callee.caller);
        probeAll('arguments of a reply callback', Array.prototype.slice.call(arguments));
        setTimeout(function () {
            probe('caller of a timer callback', arguments.callee.caller);
            probe('this in a timer callback', this);
            probeAll('arguments of a timer callback', Array.prototype.slice.call(arguments));
            setImmediate(function () {
                probe('caller of an immediate callback', arguments.callee.caller);
                probe('this in an immediate callback', this);
                finish(api);
            });
        }, 1, 'one', 2);
    });
};
""")

#: Errors the runner's functions throw at the app, including a stack overflow provoked inside them.
ERRORS_APP = app(r"""
function nearTheStackLimit(name, f) {
    var tries = 0, worked = false;
    function down() {
        try {
            down();
        } catch (overflow) {
            if (tries++ < 400 && !worked) {
                try { f(); worked = true; } catch (e) { probe(name, e); }
                throw overflow;
            }
        }
    }
    try { down(); } catch (e) { probe('the app\'s own overflow', e); }
}
api.on_inbound_message = function (command) {
    var api = this;
    var cyclic = {};
    cyclic.self = cyclic;
    caught('a BigInt field', function () { api.request('log.info', {msg: 'x', n: 1n}); });
    caught('a cyclic field', function () { api.request('log.info', {msg: 'x', c: cyclic}); });
    caught('a message that is no string', function () { api.log_info({toString: null, valueOf: null}); });
    caught('setTimeout without a function', function () { setTimeout('not a function', 1); });
    caught('setImmediate without a function', function () { setImmediate(42); });
    caught('console.log of a throwing getter', function () {
        console.log({get x() { throw new Error('getter'); }});
    });
    nearTheStackLimit('api.request near the stack limit', function () { api.request('log.info', {n: 1n}); });
    nearTheStackLimit('clearTimeout near the stack limit', function () { clearTimeout(undefined); });
    nearTheStackLimit('console.log near the stack limit', function () { console.log('%s', 'deep'); });
    nearTheStackLimit('setTimeout near the stack limit', function () { clearTimeout(setTimeout(function () {}, 9)); });
    finish(api);
};
""")

#: Proxies, getters, toJSON, Symbol.toPrimitive and util.inspect.custom given to the runner's functions.
TRAPS_APP = app(r"""
var inspectCustom = Symbol.for('nodejs.util.inspect.custom');
// Probing a proxy runs its traps again: one recorder at a time, or they recurse without end.
var recording = false;
function recorder(name) {
    return function () {
        if (recording) { return; }
        recording = true;
        try {
            probe('this in ' + name, this);
            probe('caller of ' + name, arguments.callee.caller);
            probeAll('arguments of ' + name, Array.prototype.slice.call(arguments));
        } finally {
            recording = false;
        }
    };
}
function trapping(target, name) {
    var handler = {};
    ['get', 'set', 'has', 'ownKeys', 'getOwnPropertyDescriptor', 'defineProperty', 'deleteProperty',
     'getPrototypeOf', 'setPrototypeOf', 'isExtensible', 'preventExtensions', 'apply', 'construct']
        .forEach(function (trap) {
            var seen = recorder(name + ' trap ' + trap);
            handler[trap] = function () {
                seen.apply(this, arguments);
                return Reflect[trap].apply(Reflect, arguments);
            };
        });
    return new Proxy(target, handler);
}
function tricky(name) {
    var value = {msg: 'tricky'};
    Object.defineProperty(value, 'getter', {enumerable: true, get: function () {
        recorder(name + ' getter').apply(this, arguments);
        return 'got';
    }});
    function hook(what, result) {
        return function () { recorder(name + ' ' + what).apply(this, arguments); return result; };
    }
    value.nested = {toJSON: hook('toJSON', 'json')};
    value[Symbol.toPrimitive] = hook('Symbol.toPrimitive', 'prim');
    value.toString = hook('toString', 'str');
    value[inspectCustom] = hook('util.inspect.custom', 'custom');
    return value;
}
api.on_inbound_message = function (command) {
    var api = this;
    api.request('log.info', trapping(tricky('fields'), 'fields proxy'));
    api.request('log.info', tricky('fields object'));
    api.log_info(tricky('log message'));
    api.log_info(trapping(tricky('log message proxy'), 'log message proxy'));
    api.log(tricky('api.log message'), 'info');
    api.request(tricky('cmd'), {msg: 'x'});
    console.log(tricky('console argument'), trapping(tricky('console proxy'), 'console proxy'));
    console.log('%s %d %i %f %j %o %O', tricky('s'), tricky('d'), tricky('i'), tricky('f'), tricky('j'),
                tricky('o'), tricky('O'));
    console.error(trapping(function () {}, 'console function proxy'));
    api.request('log.info', {msg: 'callback proxy'}, trapping(function (reply) {
        probe('reply to a proxied callback', reply);
        setTimeout(trapping(function () {
            var timerDone = api.log_info('after the proxied timer', function () { finish(api); });
            probe('what log_info returns', timerDone);
        }, 'timer proxy'), 1);
    }, 'callback proxy'));
};
""")

#: Values thrown at the runner: it formats them for the log, and must not run them in its own realm.
THROWN_APP = app(r"""
api.on_inbound_message = function (command) {
    var api = this;
    function report() { api.log_info('escaped: [' + escaped.join(', ') + ']'); }
    var what = command.msg.content;
    if (what === 'inspect-custom') {
        var thrown = {};
        thrown[Symbol.for('nodejs.util.inspect.custom')] = function (depth, options, inspect) {
            probeAll('arguments of util.inspect.custom on a thrown value', [depth, options, inspect]);
            probe('caller of util.inspect.custom on a thrown value', arguments.callee.caller);
            report();
            return 'thrown';
        };
        throw thrown;
    }
    if (what === 'prepare-stack-trace') {
        Error.prepareStackTrace = function (error, trace) {
            probe('trace given to Error.prepareStackTrace', trace);
            probe('caller of Error.prepareStackTrace', arguments.callee.caller);
            for (var i = 0; i < trace.length; i++) {
                probe('frame ' + i, trace[i]);
                probe('this of frame ' + i, trace[i].getThis());
                probe('function of frame ' + i, trace[i].getFunction());
            }
            report();
            return 'stack';
        };
        setTimeout(function () { throw new Error('from a timer'); }, 1);
        return;
    }
    if (what === 'rejection') {
        var reason = {get stack() {
            probe('caller of a rejection\'s stack getter', arguments.callee.caller);
            report();
            return 'x';
        }};
        reason[Symbol.for('nodejs.util.inspect.custom')] = function (depth, options, inspect) {
            probeAll('arguments of util.inspect.custom on a rejection', [depth, options, inspect]);
            report();
            return 'rejected';
        };
        Promise.reject(reason);
        return;
    }
};
""")

#: Message ``plant`` hides a secret wherever it can reach beyond its own context; ``look`` searches for it.
WARM_APP = app(r"""
function realms(api) {
    var found = [globalThis, Object.prototype];
    [api.request, api, console.log, setTimeout, globalThis.constructor, Object.getPrototypeOf(globalThis)]
        .forEach(function (x) {
            [function () { return x.constructor('return this')(); },
             function () { return x.constructor.constructor('return this')(); }]
                .forEach(function (route) { try { found.push(route()); } catch (e) {} });
        });
    return found;
}
api.on_inbound_message = function (command) {
    var api = this, places = realms(api), hits = 0;
    if (command.msg.content === 'plant') {
        places.forEach(function (place) { try { place.vxsandboxSecret = 'message one'; } catch (e) {} });
        api.log_info('planted in ' + places.length + ' places', function () { api.done(); });
        return;
    }
    places.forEach(function (place) { if (place && place.vxsandboxSecret === 'message one') { hits += 1; } });
    if (typeof vxsandboxSecret !== 'undefined' || ({}).vxsandboxSecret !== undefined) { hits += 1; }
    api.log_info('found the secret ' + hits + ' times', function () { api.done(); });
};
""")


class RealmEscapeTests(TestCase):
    """Every route an app might take into the runner's realm leads nowhere."""

    timeout = 60

    def worker(self, javascript: str, **extra: Any) -> Any:
        # No jail under the runner: these tests are about the realm boundary alone.
        extra.setdefault("isolation", "none")
        worker = make_worker(JsSandbox, js_config(javascript, **extra))
        self.addCleanup(lambda: Deferred.fromCoroutine(worker.teardown()))
        return worker

    def logged(self, worker: Any, level: int = logging.DEBUG) -> list[str]:
        return worker.resources.resources["log"].messages(level)

    async def run_probe(self, javascript: str, content: str = "probe", outcome: str = "ok",
                        reported: bool = True) -> list[str]:
        """Run one message through the app; return its ``escaped:`` lines (checking there is one if ``reported``)."""
        worker = self.worker(javascript)
        await worker.setup()
        self.assertEqual(await worker.process_message(make_user_message(content=content)), outcome,
                         self.logged(worker))
        reports = [m for m in self.logged(worker) if m.startswith("escaped: ")]
        if reported:
            self.assertTrue(reports, self.logged(worker))
        self.last_log = self.logged(worker)
        return reports

    async def test_globals_lead_nowhere(self) -> None:
        """``api``, its functions, ``console``, timers and their handles, the global object: none leads out."""
        self.assertEqual(await self.run_probe(GLOBALS_APP), ["escaped: []"])

    async def test_replies_and_callers_lead_nowhere(self) -> None:
        """A reply, ``this`` and ``arguments.callee.caller`` in every callback the runner calls hold nothing of it."""
        self.assertEqual(await self.run_probe(REPLY_APP), ["escaped: []"])

    async def test_errors_lead_nowhere(self) -> None:
        """Errors thrown by the runner's functions, also on a stack overflow provoked inside them, are the app's own."""
        self.assertEqual(await self.run_probe(ERRORS_APP), ["escaped: []"])

    async def test_proxies_getters_and_symbols_lead_nowhere(self) -> None:
        """Proxies, getters, toJSON, Symbol.toPrimitive and util.inspect.custom handed to the runner get nothing."""
        self.assertEqual(await self.run_probe(TRAPS_APP), ["escaped: []"])

    async def test_thrown_values_are_not_formatted_in_the_runner_realm(self) -> None:
        """A thrown or rejected value's hooks (util.inspect.custom, Error.prepareStackTrace) get nothing of the runner.

        The runner need not call such a hook at all; when it does, the hook finds nothing.
        """
        for content, failure in (("inspect-custom", "app handler for inbound-message failed"),
                                 ("prepare-stack-trace", "uncaught exception in app"),
                                 ("rejection", "unhandled promise rejection in app")):
            reports = await self.run_probe(THROWN_APP, content=content, outcome="error", reported=False)
            self.assertLessEqual(set(reports), {"escaped: []"}, content)
            self.assertTrue(any(m.startswith(failure) for m in self.last_log), (content, self.last_log))

    async def test_a_warm_child_keeps_nothing_between_messages(self) -> None:
        """In one warm child, message 2 finds nothing message 1 planted anywhere it could reach."""
        worker = self.worker(WARM_APP, messages_per_process=5)
        await worker.setup()
        for content in ("plant", "look", "look"):
            self.assertEqual(await worker.process_message(make_user_message(content=content)), "ok")
        self.assertEqual(worker.pool.spawned, 1)
        found = [m for m in self.logged(worker) if m.startswith("found the secret")]
        self.assertEqual(found, ["found the secret 0 times"] * 2)
