// The vxsandbox Node.js runner: runs one untrusted app and relays its requests as JSON lines.
//
// Protocol (newline-delimited JSON on stdin/stdout, UTF-8 both ways):
//   worker -> runner: {"cmd": "initialize", "javascript": ..., "app_context": ..., "filename": ...}
//                     {"cmd": "inbound-message", "msg": {...}}, {"cmd": "inbound-event", ...},
//                     {"cmd": "prepare", ...the fields of initialize} (to a prefork spare, before
//                     any tenant is known), {"cmd": "exit"}, and replies ({"reply": true,
//                     "cmd_id": ...}) to the app's requests.
//   runner -> worker: requests {"cmd": "resource.command", "cmd_id": "1", "reply": false, ...}
//                     and finally {"cmd": "js.done"} once the app calls api.done().
//   initialize's `acknowledged` ({"log.info": "msg", ...}) names the commands whose reply is
//   `success: true` whenever the request has that field: the runner answers those itself and
//   marks the request `acknowledged: true`, so the worker handles it and sends no reply.
//   initialize's `fixed` ({"config.get": "key"}) names the commands whose successful reply
//   depends only on that field's value and stays the same for the child's life: the runner
//   keeps the first such reply per value and answers later requests for it itself, without
//   writing them to the worker.
//   A worker that has a child serve several runs at once (`runs_per_child`) adds `"run_id": n`
//   to each inbound command and to every reply of that run; the runner then adds the same
//   `run_id` to every line it writes for the run (requests, `js.done`), after the app's fields
//   so the app cannot name another run. The runner's report of what one run's handler, callback
//   or timer threw carries `"fatal": true` (an app's own requests never do): the worker then has
//   the messages of the runs beside it delivered again.
//
// `initialize` compiles the app once. Every inbound command (one message or event: one run)
// then gets a fresh vm context in which the app's code runs again, whose globals are a fresh
// `api`, `console` (routed to the log resource, since stdout is the protocol channel), the timer
// functions and whatever the trusted `app_context` expression gives (e.g. `{require: require}`).
//
// The runner exposes nothing of its own realm to the app (Node's `vm` is no security boundary
// by itself: any object or function of the runner's realm leads to its `Function`, and from
// there to `process`). The context is made from a null-prototype object, and `api`, `console`,
// the timers, replies, errors and everything else the app touches are built by a bootstrap
// evaluated inside the context. The only link back is one host function that takes and returns
// primitives, never throws, and is never reachable by app code; the runner calls into the
// context only with strings and numbers (replies and commands as JSON text), and what the app
// throws is described as a string inside its own realm. Timers are the app realm's functions
// whose real handles the runner keeps by number, so they die with the run. A warm runner
// serving many messages of one tenant therefore carries no state from one message to the next.
//
// `app_context` is trusted configuration: what it hands over (`require`, `process`, modules)
// belongs to the runner's realm and gives the app all of it, as the operator chose. Modules
// loaded through `require` stay cached for the process, as in any Node program. For untrusted
// code that is given `require`, the OS jail (`isolation: bwrap`) is the wall, not this runner.
//
// An uncaught exception or an unhandled promise rejection is logged through the `log` resource
// and ends the process with exit status 1, so a broken app never waits for the worker's timeout.
//
// Compatible with the Vumi JavaScript toolkit (npm `vumigo_v02`): `api.request(cmd, fields,
// callback)` calls `callback` with `this` = api; inbound commands go to `api.on_<cmd>` with `-`
// and `.` turned into `_`, else to `api.on_unknown_command`.
'use strict';

// Standard input and output are read and written with `fs` on fds 0 and 1, not through
// process.stdin and process.stdout: those streams load `net` and `tty`, compiled from source
// at every start when node runs with V8 flags such as --max-old-space-size (which void the
// code cache built into node), and that was a third of what a runner costs to start. The
// read waits on one of libuv's four pool threads, which leaves the app three for its own
// asynchronous fs, crypto, zlib and dns.lookup work.
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const Module = require('module');
const util = require('util');

// Building a startup snapshot (`node --build-snapshot runner.js --preload=JSON`, see
// vxsandbox_js/snapshot.py): Node 20 lets a snapshot's script require built-in modules only, so
// the app's modules are loaded by snapshotLoad below, and the runner starts when a child is
// started from the snapshot. Otherwise the app's modules are loaded before any message when the
// worker names them (--preload=JSON). (`v8` is required only then: under the heap flag, Node
// compiles it from source, 6 ms of every child's start.)
const BUILDING_SNAPSHOT = process.execArgv.includes('--build-snapshot');
let SNAPSHOT = null;
if (BUILDING_SNAPSHOT) {
    try {
        SNAPSHOT = snapshotLoad(process.argv);
    } catch (err) {
        fs.writeSync(2, 'vxsandbox-snapshot-error ' + String(err && err.message).split('\n')[0] + '\n');
        process.exit(1);
    }
    // The worker keeps these files' state: a change to any of them makes the snapshot stale.
    fs.writeSync(2, 'vxsandbox-snapshot-files ' + JSON.stringify(Array.from(SNAPSHOT.modules.keys())) + '\n');
} else {
    require('./preload.js')(process.argv);
}

// How long a fatal error waits for the log resource to acknowledge the report before exiting.
const FATAL_LOG_WAIT_MS = 2000;
// Bytes of `fixed` replies a child keeps (beyond them a reply is not kept: its requests go on
// being written to the worker), and requests awaiting a reply that is to be kept.
const FIXED_REPLY_BYTES = 1024 * 1024;
const FIXED_AWAITED = 64;
const READ_SIZE = 65536;
const NEWLINE = 10;

// Blocks the thread for `ms` (a pipe that was made non-blocking and is full must be waited for).
// (Its cell is made at first use: a snapshot being built has no SharedArrayBuffer.)
let pauseCell = null;
function pause(ms) {
    if (pauseCell === null) {
        pauseCell = new Int32Array(new SharedArrayBuffer(4));
    }
    Atomics.wait(pauseCell, 0, 0, ms);
}

function writeAll(fd, buffer) {
    let offset = 0;
    while (offset < buffer.length) {
        try {
            offset += fs.writeSync(fd, buffer, offset);
        } catch (err) {
            if (err.code !== 'EAGAIN') {
                throw err;
            }
            pause(1);
        }
    }
}

function writeLine(text) {
    // Synchronous, so nothing written is lost by a later process.exit.
    writeAll(1, Buffer.from(text + '\n', 'utf8'));
}

function writeCommand(command) {
    writeLine(JSON.stringify(command));
}

// Everything the app touches is made by this function, evaluated inside the app's own context
// (its source is compiled once as a vm.Script and run in each new context), so every object,
// function, reply and error the app can reach belongs to its own realm. Its one link to the
// runner is `host(op, a, b, c)`: it takes and returns primitives only and never throws; it is
// kept in this closure and never handed to app code, and neither is anything caught from it
// (entering it on an exhausted stack throws the runner's RangeError, which is dropped here).
// The runner calls in only with strings and numbers, and gets back undefined or a string: the
// description of what the app threw. Nothing here may refer to the runner's variables.
function bootstrap(host, runnerFile) {
    'use strict';
    const global = globalThis;
    const apply = Reflect.apply;
    const assign = Object.assign;
    const create = Object.create;
    const keys = Object.keys;
    const getPrototypeOf = Object.getPrototypeOf;
    const isArray = Array.isArray;
    const stringify = JSON.stringify;
    const parse = JSON.parse;
    const toStr = String;
    const toNum = Number;
    const ErrorCtor = Error;
    const RangeErrorCtor = RangeError;
    const TypeErrorCtor = TypeError;
    const DateCtor = Date;
    const RegExpCtor = RegExp;
    const dateToISO = Date.prototype.toISOString;
    const regexpToString = RegExp.prototype.toString;
    const symbolToString = Symbol.prototype.toString;
    const errorToString = Error.prototype.toString;
    const functionToString = Function.prototype.toString;
    const split = String.prototype.split;
    const indexOf = String.prototype.indexOf;
    const replace = String.prototype.replace;
    const join = Array.prototype.join;
    const push = Array.prototype.push;
    const test = RegExp.prototype.test;
    const objectPrototype = Object.prototype;
    const toInt = parseInt;
    const toFloat = parseFloat;
    const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
    const NODE_FRAME = /\(node:|at node:/;
    const FORMAT = /%[sdifjoOc%]/g;
    const TIMER_MAX = 2147483647;

    function call(op, a, b, c) {
        let result;
        try {
            result = host(op, a, b, c);
        } catch {
            throw new RangeErrorCtor('Maximum call stack size exceeded');
        }
        if (result === false) {
            throw new RangeErrorCtor('Maximum call stack size exceeded');
        }
        if (result === undefined) {
            throw new TypeErrorCtor('the runner refused ' + op + ': not a JSON object on one line');
        }
        return result;
    }

    // --- describing values (console lines, errors) -------------------------------------

    function isError(value) {
        for (let p = value; p !== null; p = getPrototypeOf(p)) {
            if (p === ErrorCtor.prototype) {
                return true;
            }
        }
        return false;
    }

    function quote(text) {
        return "'" + apply(replace, text, [/['\\\n]/g, function (c) { return c === '\n' ? '\\n' : '\\' + c; }]) + "'";
    }

    function primitive(value, nested) {
        switch (typeof value) {
        case 'string': return nested ? quote(value) : value;
        case 'number': return value === 0 && 1 / value < 0 ? '-0' : toStr(value);
        case 'bigint': return toStr(value) + 'n';
        case 'symbol': return apply(symbolToString, value, []);
        default: return toStr(value);
        }
    }

    function inspect(value, depth, seen) {
        if (value === null || (typeof value !== 'object' && typeof value !== 'function')) {
            return primitive(value, depth > 0);
        }
        if (typeof value === 'function') {
            const name = value.name;
            const text = apply(functionToString, value, []);
            const kind = apply(indexOf, text, ['class']) === 0 ? 'class' : 'Function';
            return '[' + kind + (name ? ': ' + name : kind === 'class' ? ' (anonymous)' : ' (anonymous)') + ']';
        }
        if (isError(value)) {
            const stack = value.stack;
            return typeof stack === 'string' ? appFrames(stack) : apply(errorToString, value, []);
        }
        if (value instanceof DateCtor) {
            return apply(dateToISO, value, []);
        }
        if (value instanceof RegExpCtor) {
            return apply(regexpToString, value, []);
        }
        for (let i = 0; i < seen.length; i++) {
            if (seen[i] === value) {
                return '[Circular]';
            }
        }
        const array = isArray(value);
        const proto = getPrototypeOf(value);
        let prefix = '';
        if (proto === null) {
            prefix = '[' + (array ? 'Array' : 'Object') + ': null prototype] ';
        } else if (!array && proto !== objectPrototype) {
            const ctor = proto.constructor;
            prefix = (typeof ctor === 'function' && ctor.name ? ctor.name : 'Object') + ' ';
        }
        if (depth > 2) {
            return array ? '[Array]' : '[' + (prefix ? apply(replace, prefix, [/ $/, '']) : 'Object') + ']';
        }
        const parts = [];
        const names = keys(value);
        apply(push, seen, [value]);
        for (let i = 0; i < names.length; i++) {
            const name = names[i];
            const item = inspect(value[name], depth + 1, seen);
            if (array && toStr(i) === name) {
                apply(push, parts, [item]);
            } else {
                apply(push, parts, [(apply(test, IDENTIFIER, [name]) ? name : quote(name)) + ': ' + item]);
            }
        }
        seen.length -= 1;
        if (parts.length === 0) {
            return prefix + (array ? '[]' : '{}');
        }
        const body = apply(join, parts, [', ']);
        return prefix + (array ? '[ ' + body + ' ]' : '{ ' + body + ' }');
    }

    function safely(describe, value) {
        try {
            return describe(value);
        } catch {
            return '[a ' + typeof value + ' that could not be described]';
        }
    }

    function inspectTop(value) {
        return inspect(value, 0, []);
    }

    function inspectNested(value) {
        return inspect(value, 1, []);
    }

    // The runner's own frames and Node's internals say nothing to the app's author.
    function appFrames(stack) {
        const lines = apply(split, stack, ['\n']);
        const kept = [];
        for (let i = 0; i < lines.length; i++) {
            const line = lines[i];
            if (apply(indexOf, line, [runnerFile]) < 0 && !apply(test, NODE_FRAME, [line])) {
                apply(push, kept, [line]);
            }
        }
        return apply(join, kept, ['\n']);
    }

    function describe(value) {
        return safely(function (v) {
            if (v !== null && (typeof v === 'object' || typeof v === 'function')) {
                if (v.code === 'ERR_ACCESS_DENIED') {
                    // Node's message names no path: the worker tells the owner and the operator
                    // which one was refused and which config key allows it.
                    host('denied', toStr(v.permission), toStr(v.resource));
                }
                const stack = v.stack;
                if (typeof stack === 'string') {
                    return appFrames(stack);
                }
            }
            return inspectTop(v);
        }, value);
    }

    // util.format's rules: placeholders in a leading string, then the rest joined by spaces.
    function format(args) {
        let next = 0;
        let text = '';
        if (typeof args[0] === 'string' && args.length > 1) {
            next = 1;
            text = apply(replace, args[0], [FORMAT, function (spec) {
                if (spec === '%%') {
                    return '%';
                }
                if (next >= args.length) {
                    return spec;
                }
                const arg = args[next];
                next += 1;
                switch (spec) {
                case '%s':
                    return typeof arg === 'string' ? arg : safely(inspectNested, arg);
                case '%d':
                    return typeof arg === 'bigint' ? arg + 'n' : typeof arg === 'symbol' ? 'NaN' : primitive(toNum(arg));
                case '%i':
                    return typeof arg === 'bigint' ? arg + 'n' : typeof arg === 'symbol' ? 'NaN' : toStr(toInt(arg, 10));
                case '%f':
                    return typeof arg === 'symbol' ? 'NaN' : toStr(toFloat(arg));
                case '%j':
                    return safely(stringify, arg);
                case '%c':
                    return '';
                default:
                    return safely(inspectNested, arg);
                }
            }]);
        }
        for (let i = next; i < args.length; i++) {
            const arg = args[i];
            const part = typeof arg === 'string' ? arg : safely(inspectTop, arg);
            text = i === 0 ? part : text + ' ' + part;
        }
        return text;
    }

    // --- the api ---------------------------------------------------------------------------

    const pending = create(null);
    let doneRequested = false;
    const api = {};

    api.request = function (cmd, fields, callback) {
        const command = assign({}, fields || {});
        command.cmd = cmd;
        command.reply = false;
        delete command.cmd_id;
        delete command.acknowledged;
        delete command.run_id;
        delete command.fatal;
        // A command the worker listed as acknowledged (see the runner's initialize), carrying
        // the field that makes its reply `success: true`, is answered here instead of by a
        // round trip through the worker, which still handles it and sends no reply.
        const field = call('acks', toStr(cmd));
        const acknowledged = field !== '' && command[field] !== undefined && command[field] !== null;
        if (acknowledged) {
            command.acknowledged = true;
        }
        // A command whose reply stays the same for the child's life (initialize's `fixed`),
        // asked again for the same value, is answered by the runner from its copy of the reply.
        const fixedField = acknowledged ? '' : call('fixed', toStr(cmd));
        const fixedValue = fixedField !== '' && typeof command[fixedField] === 'string'
            ? command[fixedField] : null;
        const recalled = fixedValue === null ? '' : call('recall', toStr(cmd), fixedValue);
        const id = recalled !== '' ? recalled : call('send', stringify(command));
        if (id === null) {
            // The run is over (the app called done); a late request belongs to no message.
            return null;
        }
        if (fixedValue !== null && recalled === '') {
            call('remember', id, toStr(cmd), fixedValue);
        }
        if (typeof callback === 'function') {
            pending[id] = callback;
            if (acknowledged) {
                // The runner delivers the worker's reply itself, in a later turn.
                call('ack', id, toStr(cmd));
            }
        }
        return id;
    };

    function logger(level) {
        return function (msg, callback) {
            return api.request('log.' + level, {msg: toStr(msg)}, callback);
        };
    }

    api.log_debug = logger('debug');
    api.log_info = logger('info');
    api.log_warning = logger('warning');
    api.log_error = logger('error');
    api.log_critical = logger('critical');
    api.log = function (msg, level, callback) {
        return api.request('log.' + (level || 'info'), {msg: toStr(msg)}, callback);
    };

    api.done = function () {
        if (doneRequested) {
            return;
        }
        doneRequested = true;
        // `js.done` follows the log line at once rather than after its reply: the worker
        // finishes the log request before it ends the run, and a warm child saves a round trip.
        api.log_info('Done.');
        call('done');
    };

    // The Vumi runners never answered commands without a handler; ending the run is kinder
    // than leaving it to the timeout, and apps (and the toolkit) replace this handler anyway.
    api.on_unknown_command = function (command) {
        api.log_warning('app has no handler for command ' + stringify(command.cmd) +
                        '; ending the run', function () { call('done'); });
    };

    function consoleMethod(log) {
        return function () {
            const args = [];
            for (let i = 0; i < arguments.length; i++) {
                args[i] = arguments[i];
            }
            log(format(args));
        };
    }

    const console = {
        log: consoleMethod(api.log_info),
        info: consoleMethod(api.log_info),
        debug: consoleMethod(api.log_debug),
        warn: consoleMethod(api.log_warning),
        error: consoleMethod(api.log_error),
    };

    // --- timers: the real ones are the runner's, keyed by number, and die with the run ---

    const timers = create(null);
    let lastTimer = 0;

    function starter(kind) {
        return function (callback, delay) {
            if (typeof callback !== 'function') {
                throw new TypeErrorCtor('The "callback" argument must be of type function. Received ' +
                                        safely(inspectNested, callback));
            }
            const args = [];
            for (let i = kind === 'm' ? 1 : 2; i < arguments.length; i++) {
                apply(push, args, [arguments[i]]);
            }
            let ms = kind === 'm' ? 0 : toNum(delay);
            if (!(ms >= 1 && ms <= TIMER_MAX)) {
                ms = 1;
            }
            lastTimer += 1;
            const id = lastTimer;
            timers[id] = {callback: callback, args: args, repeat: kind === 'i'};
            call('timer', kind, id, ms);
            return id;
        };
    }

    function clear(id) {
        if (typeof id === 'number' && timers[id] !== undefined) {
            delete timers[id];
            call('clear', id);
        }
    }

    global.api = api;
    global.console = console;
    global.setTimeout = starter('t');
    global.setInterval = starter('i');
    global.setImmediate = starter('m');
    global.clearTimeout = clear;
    global.clearInterval = clear;
    global.clearImmediate = clear;

    // --- entry points for the runner: strings and numbers in, undefined or a description out ---

    function dispatch(line) {
        try {
            const command = parse(line);
            let handler = api['on_' + apply(replace, command.cmd, [/[-.]/g, '_'])];
            if (typeof handler !== 'function') {
                handler = api.on_unknown_command;
            }
            if (typeof handler === 'function') {
                const result = apply(handler, api, [command]);
                if (result && typeof result.then === 'function') {
                    result.then(null, function (err) {
                        call('fail', 'app handler for ' + command.cmd + ' failed', describe(err));
                    });
                }
            }
            return undefined;
        } catch (err) {
            return describe(err);
        }
    }

    function deliver(line) {
        try {
            const reply = parse(line);
            const callback = pending[reply.cmd_id];
            if (callback !== undefined) {
                delete pending[reply.cmd_id];
                apply(callback, api, [reply]);
            }
            return undefined;
        } catch (err) {
            return describe(err);
        }
    }

    function fire(id) {
        try {
            const timer = timers[id];
            if (timer !== undefined) {
                if (!timer.repeat) {
                    delete timers[id];
                }
                apply(timer.callback, undefined, timer.args);
            }
            return undefined;
        } catch (err) {
            return describe(err);
        }
    }

    return {dispatch: dispatch, deliver: deliver, fire: fire, describe: describe};
}

// Compiled once; its frames carry the runner's file name, so error reports leave them out.
// (At first use: a compiled vm.Script cannot be kept in a startup snapshot.)
let BOOTSTRAP = null;

// The runner's own errors (a broken app_context, a syntax error in the app) are formatted here;
// the app's are formatted inside its realm.
function describeOwn(err) {
    if (err instanceof Error && typeof err.stack === 'string') {
        return err.stack.split('\n').filter(function (frame) {
            return frame.indexOf(__filename) < 0 && !/\(node:|at node:/.test(frame);
        }).join('\n');
    }
    return util.inspect(err);
}

// The fields of an initialize or prepare command that decide what a child runs, as one string.
function appKey(command) {
    return JSON.stringify([command.javascript, command.app_context, command.filename]);
}

// initialize's `acknowledged` and `fixed`: {"resource.command": "field", ...}. `acknowledged`
// names the commands whose reply is `success: true` (and nothing else) whenever the request
// carries that field, not null: the worker sends no reply to such a request marked
// `acknowledged: true`. `fixed` names those whose successful reply depends only on the field's
// (string) value for the child's life. Anything malformed counts for nothing: every request
// then waits for the worker's reply, as before.
function commandTable(value) {
    const table = Object.create(null);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        Object.keys(value).forEach(function (cmd) {
            if (typeof value[cmd] === 'string' && value[cmd] !== '') {
                table[cmd] = value[cmd];
            }
        });
    }
    return table;
}

// One run: the context of one inbound message or event, with its own api, timers and pending
// callbacks. Only its bridge to the runner and the entry points the bootstrap returned live here.
function Session(runner) {
    const self = this;
    self.closed = false;
    // The worker's number for the run, when it has the child serve several at once (else null).
    self.run = null;
    self.handles = new Map();
    const sandbox = Object.create(null);
    const context = vm.createContext(sandbox);
    if (BOOTSTRAP === null) {
        BOOTSTRAP = new vm.Script('(' + bootstrap.toString() + ')', {filename: __filename});
    }
    const install = BOOTSTRAP.runInContext(context);
    const host = (op, a, b, c) => {
        try {
            return self.bridge(runner, op, a, b, c);
        } catch (err) {
            return false;
        }
    };
    // An arrow function has no `prototype`; its own prototype becomes the app realm's
    // Function.prototype, so even its `constructor` would lead nowhere.
    Object.setPrototypeOf(host, Object.getPrototypeOf(install));
    const entry = install(host, __filename);
    // Called as plain functions, so not even `this` crosses into the app's realm.
    const dispatch = entry.dispatch;
    const deliver = entry.deliver;
    const fire = entry.fire;
    const describe = entry.describe;
    self.dispatch = (line) => dispatch(line);
    self.deliver = (line) => deliver(line);
    self.fire = (id) => fire(id);
    self.describe = (value) => describe(value);
    self.sandbox = sandbox;
    self.context = context;
}

Session.prototype.bridge = function (runner, op, a, b, c) {
    if (op === 'send') {
        if (typeof a !== 'string' || a.charCodeAt(0) !== 123 || a.charCodeAt(a.length - 1) !== 125 ||
                a.indexOf('\n') >= 0) {
            return undefined;
        }
        if (this.closed) {
            return null;
        }
        const id = runner.nextId();
        writeLine('{"cmd_id":"' + id + '"' + (a.length > 2 ? ',' + a.slice(1, -1) : '') + runTag(this) + '}');
        return id;
    }
    if (op === 'acks' && typeof a === 'string') {
        const field = runner.acknowledged[a];
        return typeof field === 'string' ? field : '';
    }
    if (op === 'fixed' && typeof a === 'string') {
        const field = runner.fixed[a];
        return typeof field === 'string' ? field : '';
    }
    if (op === 'recall' && typeof a === 'string' && typeof b === 'string') {
        if (this.closed) {
            return null;
        }
        const replies = runner.fixedReplies.get(a);
        const reply = replies === undefined ? undefined : replies.get(b);
        if (reply === undefined) {
            return '';
        }
        const id = runner.nextId();
        setImmediate(answer, runner, this, id, a, reply);
        return id;
    }
    if (op === 'remember' && typeof a === 'string' && typeof b === 'string' && typeof c === 'string') {
        if (runner.awaited.size < FIXED_AWAITED) {
            runner.awaited.set(a, [b, c]);
        }
        return true;
    }
    if (op === 'ack' && typeof a === 'string' && typeof b === 'string') {
        setImmediate(answer, runner, this, a, b, ',"success":true');
        return true;
    }
    if (op === 'timer' && typeof b === 'number' && typeof c === 'number') {
        if (this.closed) {
            return true;
        }
        let handle;
        if (a === 't') {
            handle = setTimeout(fireTimer, c, runner, this, b);
        } else if (a === 'i') {
            handle = setInterval(fireTimer, c, runner, this, b);
        } else if (a === 'm') {
            handle = setImmediate(fireTimer, runner, this, b);
        } else {
            return undefined;
        }
        this.handles.set(b, {handle: handle, kind: a});
        return true;
    }
    if (op === 'clear' && typeof a === 'number') {
        this.stopTimer(a);
        return true;
    }
    if (op === 'done') {
        runner.finish(this);
        return true;
    }
    if (op === 'denied' && typeof a === 'string' && typeof b === 'string') {
        runner.denied(a, b, this);
        return true;
    }
    if (op === 'fail' && typeof a === 'string' && typeof b === 'string') {
        runner.fail(a, b, this);
        return true;
    }
    return undefined;
};

Session.prototype.stopTimer = function (id) {
    const timer = this.handles.get(id);
    if (timer !== undefined) {
        this.handles.delete(id);
        if (timer.kind === 'm') {
            clearImmediate(timer.handle);
        } else {
            clearTimeout(timer.handle);
        }
    }
};

Session.prototype.close = function () {
    this.closed = true;
    this.handles.forEach(function (timer) {
        if (timer.kind === 'm') {
            clearImmediate(timer.handle);
        } else {
            clearTimeout(timer.handle);
        }
    });
    this.handles.clear();
};

// The `run_id` field a line of `session`'s run ends with ('' when the worker numbers no runs).
function runTag(session) {
    return session !== null && session.run !== null ? ',"run_id":' + session.run : '';
}

// The reply the worker would have sent, delivered as if it had: to an acknowledged request
// (`fields` is `,"success":true`) or to a `fixed` one (the kept reply's fields).
function answer(runner, session, id, cmd, fields) {
    if (session.closed) {
        return;
    }
    const problem = session.deliver('{"cmd":' + JSON.stringify(cmd) + ',"cmd_id":' + JSON.stringify(id) +
                                    ',"reply":true' + fields + '}');
    if (typeof problem === 'string') {
        runner.fail('app callback for ' + cmd + ' failed', problem, session);
    }
}

function fireTimer(runner, session, id) {
    if (session.closed) {
        return;
    }
    const timer = session.handles.get(id);
    if (timer !== undefined && timer.kind !== 'i') {
        session.handles.delete(id);
    }
    const problem = session.fire(id);
    if (typeof problem === 'string') {
        runner.fail('uncaught exception in app', problem, session);
    }
}

function Runner() {
    const self = this;
    let lastId = 0;
    self.app = null;
    // Set by the first `initialize`: the child now serves the tenant of its first message.
    self.initialized = false;
    // Commands the runner answers itself (initialize's `acknowledged`): name -> required field.
    self.acknowledged = Object.create(null);
    // Commands whose replies the runner keeps (initialize's `fixed`): name -> the field whose
    // value a reply depends on; the kept replies (name -> value -> the reply's other fields as
    // JSON text, each starting with a comma); requests whose reply is to be kept, by cmd_id.
    self.fixed = Object.create(null);
    self.fixedReplies = new Map();
    self.fixedBytes = 0;
    self.awaited = new Map();
    // What `prepare` loaded (its fields as one string), until `initialize` says whether it fits.
    self.prepared = null;
    // A context made ahead of a run (see prepare), never yet handed to any app code.
    self.standby = null;
    self.session = null;
    // The open sessions of numbered runs, by run_id (a worker serving several runs at once).
    self.sessions = new Map();
    // The latest session's describe, for what reaches the process's error events.
    self.describe = null;
    self.failing = false;
    self.fatalId = null;
    self.queued = [];

    self.nextId = function () {
        lastId += 1;
        return String(lastId);
    };

    // An open session a line about the runner itself is written for: `session` if it is open,
    // else the latest, else any (a worker serving several runs at once reads no line without
    // a run of its own).
    self.someSession = function (session) {
        if (session && !session.closed) {
            return session;
        }
        if (self.session !== null && !self.session.closed) {
            return self.session;
        }
        const open = self.sessions.values().next();
        return open.done ? null : open.value;
    };

    // Writes one of the runner's own commands (an object) for `session`'s run, if it has one.
    self.write = function (command, session) {
        if (session !== null && session.run !== null) {
            command.run_id = session.run;
        }
        writeCommand(command);
    };

    // A message about the runner itself, not part of any run.
    self.warn = function (msg) {
        self.write({cmd: 'log.warning', cmd_id: self.nextId(), reply: false, msg: msg}, self.someSession(null));
    };

    self.finish = function (session) {
        if (session.closed) {
            return;
        }
        session.close();
        if (self.session === session) {
            self.session = null;
        }
        if (session.run !== null) {
            self.sessions.delete(session.run);
        }
        self.write({cmd: 'js.done', cmd_id: self.nextId(), reply: false}, session);
        // The next run's context is made while the worker handles this one's end, off the next
        // message's path. It belongs to no run or tenant until that run begins in it; the
        // context of the run just ended is never used again.
        setImmediate(self.makeStandby);
    };

    self.makeStandby = function () {
        if (self.app !== null && self.standby === null && !self.failing) {
            try {
                self.standby = new Session(self);
            } catch (err) {
                // Left to the next run, which makes its own context and reports what fails.
            }
        }
    };

    // Reports `what: detail` (both strings) through the log and exits 1 once it is acknowledged.
    // `session` is the run it happened in, when known; it ends every run of the process.
    self.fail = function (what, detail, session) {
        if (self.failing) {
            return;
        }
        self.failing = true;
        const timer = setTimeout(function () { process.exit(1); }, FATAL_LOG_WAIT_MS);
        timer.unref();
        self.fatalId = self.nextId();
        const report = {cmd: 'log.error', cmd_id: self.fatalId, reply: false, msg: what + ': ' + detail};
        if (session && !session.closed) {
            // The run at fault is known: the worker delivers the messages of the runs beside it again.
            report.fatal = true;
        }
        self.write(report, self.someSession(session));
    };

    // A value thrown at the process's error events: one of the runner's own errors, or the
    // app's (from a promise job, or from something app_context handed over), described in
    // the app's realm so that none of its hooks runs with the runner's objects.
    // Reports a read or other access Node's permission model refused (strings only).
    self.denied = function (permission, resource, session) {
        self.write({cmd: 'js.access_denied', cmd_id: self.nextId(), reply: false,
                    permission: permission, resource: resource}, self.someSession(session));
    };

    self.failValue = function (what, value) {
        let detail;
        if (value instanceof Error) {
            if (value.code === 'ERR_ACCESS_DENIED') {
                self.denied(String(value.permission), String(value.resource));
            }
            detail = describeOwn(value);
        } else {
            detail = self.describe !== null ? self.describe(value) : undefined;
            if (typeof detail !== 'string') {
                detail = 'a value of type ' + typeof value;
            }
        }
        self.fail(what, detail);
    };

    self.load = function (command) {
        const filename = typeof command.filename === 'string' && command.filename
            ? path.resolve(command.filename)
            : path.join(process.cwd(), 'app.js');
        // `require` given to app_context resolves modules next to the app, so a file-based
        // app finds its own node_modules.
        const appRequire = Module.createRequire(filename);
        let makeContext = null;
        if (typeof command.app_context === 'string' && command.app_context.trim()) {
            makeContext = new Function(
                'require', '__filename', '__dirname',
                'return (' + command.app_context + '\n);');
        }
        self.app = {
            filename: filename,
            script: new vm.Script(String(command.javascript || ''), {filename: filename}),
            context: function () {
                if (makeContext === null) {
                    return null;
                }
                const extra = makeContext(appRequire, filename, path.dirname(filename));
                if (extra === null || typeof extra !== 'object') {
                    throw new TypeError('app_context must evaluate to an object, got ' + typeof extra);
                }
                return extra;
            },
        };
        // Evaluate the context once now, so a broken app_context is reported at load.
        self.app.context();
    };

    // `prepare` (the worker sends it to a prefork spare, before any tenant is known) carries what
    // `initialize` will: the app is compiled, app_context evaluated and the first run's context
    // made while the spare waits. Nothing here runs app code or belongs to a tenant. A failure is
    // left for `initialize` to meet and report, so a broken app cannot make spares die and restart.
    self.prepare = function (command) {
        if (self.initialized || self.prepared !== null) {
            return;
        }
        try {
            self.load(command);
            self.standby = new Session(self);
            self.prepared = appKey(command);
        } catch (err) {
            self.app = null;
            self.standby = null;
        }
    };

    self.initialize = function (command) {
        self.initialized = true;
        self.acknowledged = commandTable(command.acknowledged);
        self.fixed = commandTable(command.fixed);
        if (self.prepared === null || self.prepared !== appKey(command)) {
            // Not prepared, or prepared with other code than this child is to run: load it anew.
            self.standby = null;
            try {
                self.load(command);
            } catch (err) {
                self.fail('app failed to load', describeOwn(err));
                return;
            }
        }
        self.prepared = null;
        const queued = self.queued;
        self.queued = [];
        queued.forEach(function (item) { self.dispatch(item[0], item[1]); });
    };

    // Start a run (numbered `run` by the worker, or null): a fresh context in which the app's code
    // runs, with a fresh api. Returns the session, or the description of what the app threw
    // while loading (the session is then left open, for the fatal report to name its run).
    self.begin = function (run) {
        const extra = self.app.context();
        const session = self.standby !== null ? self.standby : new Session(self);
        self.standby = null;
        self.session = session;
        if (typeof run === 'number') {
            session.run = run;
            self.sessions.set(run, session);
        }
        self.describe = session.describe;
        if (extra !== null) {
            // Operator-trusted: whatever app_context hands over is the operator's choice.
            Object.keys(extra).forEach(function (name) {
                if (name !== 'api') {
                    session.sandbox[name] = extra[name];
                }
            });
        }
        try {
            self.app.script.runInContext(session.context, {displayErrors: false});
        } catch (err) {
            return session.describe(err);
        }
        return session;
    };

    self.dispatch = function (command, line) {
        let problem;
        try {
            const session = self.begin(command.run_id);
            problem = typeof session === 'string' ? session : session.dispatch(line);
        } catch (err) {
            problem = describeOwn(err);
        }
        if (typeof problem === 'string') {
            self.fail('app handler for ' + command.cmd + ' failed', problem, self.session);
        }
    };

    self.reply = function (command, line) {
        if (command.cmd_id === self.fatalId) {
            process.exit(1);
        }
        const awaited = self.awaited.get(command.cmd_id);
        if (awaited !== undefined) {
            self.awaited.delete(command.cmd_id);
            self.keep(awaited[0], awaited[1], line);
        }
        const session = command.run_id !== undefined ? self.sessions.get(command.run_id) || null : self.session;
        if (session === null || session.closed) {
            return;
        }
        const problem = session.deliver(line);
        if (typeof problem === 'string') {
            self.fail('app callback for ' + command.cmd + ' failed', problem, session);
        }
    };

    // Keeps a successful reply to the `fixed` command `cmd` for `value` (the first one, while
    // FIXED_REPLY_BYTES allows), for the runner to answer that request itself from now on.
    self.keep = function (cmd, value, line) {
        let reply;
        try {
            reply = JSON.parse(line);
        } catch (err) {
            return;
        }
        if (reply === null || typeof reply !== 'object' || reply.cmd !== cmd || reply.success !== true) {
            return;
        }
        let fields = '';
        Object.keys(reply).forEach(function (name) {
            if (name !== 'cmd' && name !== 'cmd_id' && name !== 'reply' && name !== 'run_id') {
                fields += ',' + JSON.stringify(name) + ':' + JSON.stringify(reply[name]);
            }
        });
        let replies = self.fixedReplies.get(cmd);
        if (replies === undefined) {
            replies = new Map();
            self.fixedReplies.set(cmd, replies);
        }
        const size = fields.length + value.length;
        if (!replies.has(value) && self.fixedBytes + size <= FIXED_REPLY_BYTES) {
            replies.set(value, fields);
            self.fixedBytes += size;
        }
    };

    self.handle = function (command, line) {
        if (command.reply === true) {
            self.reply(command, line);
            return;
        }
        if (self.failing) {
            // Only the reply to the fatal error report matters now.
            return;
        }
        if (command.cmd === 'exit') {
            process.exit(0);
        }
        if (command.cmd === 'prepare') {
            self.prepare(command);
            return;
        }
        if (!self.initialized) {
            if (command.cmd === 'initialize') {
                self.initialize(command);
            } else {
                self.queued.push([command, line]);
            }
            return;
        }
        if (command.cmd === 'initialize') {
            return;
        }
        self.dispatch(command, line);
    };

    self.lineReceived = function (line) {
        if (!line.trim()) {
            return;
        }
        const command = routing(line);
        if (command !== null) {
            self.handle(command, line);
        }
    };

    // What the runner needs of a line: all of initialize and prepare, only the routing fields of
    // anything else. The app's context parses the line again itself (only strings cross into
    // it), so the runner's own copy of a message is let go before that second parse: a 20 MiB
    // message then needs two copies of its text in the 64 MiB heap, not three.
    function routing(line) {
        let command;
        try {
            command = JSON.parse(line);
        } catch (err) {
            self.warn('runner received a line that is not JSON, ignored: ' + line.slice(0, 200));
            return null;
        }
        if (command === null || typeof command !== 'object' || typeof command.cmd !== 'string') {
            self.warn('runner received a line that is not a command, ignored: ' + line.slice(0, 200));
            return null;
        }
        if (command.cmd === 'initialize' || command.cmd === 'prepare') {
            return command;
        }
        return {cmd: command.cmd, cmd_id: command.cmd_id, reply: command.reply, run_id: command.run_id};
    }

// Chunks of a line not yet ended: only each new chunk is searched for a newline, so a
    // line of many megabytes costs time in proportion to its length, not its square. Lines
    // are cut at the newline byte, which never occurs inside a UTF-8 sequence, and decoded whole.
    let partial = [];
    self.bytesReceived = function (chunk) {
        let end = chunk.indexOf(NEWLINE);
        if (end < 0) {
            partial.push(chunk);
            return;
        }
        partial.push(chunk.subarray(0, end));
        let line = partial.length === 1 ? partial[0] : Buffer.concat(partial);
        partial = [];
        let start = end + 1;
        for (;;) {
            self.lineReceived(line.toString('utf8'));
            end = chunk.indexOf(NEWLINE, start);
            if (end < 0) {
                break;
            }
            line = chunk.subarray(start, end);
            start = end + 1;
        }
        if (start < chunk.length) {
            partial.push(chunk.subarray(start));
        }
    };

    self.ended = function () { process.exit(self.failing ? 1 : 0); };

    // Reads fd 0 on libuv's thread pool, one read at a time, until end of input. The buffer is
    // read into again unless a line still unfinished keeps a view of it.
    let buffer = null;
    function readInput() {
        if (buffer === null) {
            buffer = Buffer.allocUnsafe(READ_SIZE);
        }
        fs.read(0, buffer, 0, READ_SIZE, null, function (err, n) {
            if (err && err.code === 'EAGAIN') {
                // Someone handed us a non-blocking pipe: the stream reader polls it properly.
                streamInput();
            } else if (err) {
                process.stderr.write('runner cannot read its input: ' + err.message + '\n');
                process.exit(1);
            } else if (n === 0) {
                self.ended();
            } else {
                self.bytesReceived(buffer.subarray(0, n));
                if (partial.length > 0) {
                    buffer = null;
                }
                readInput();
            }
        });
    }

    function streamInput() {
        process.stdin.on('data', self.bytesReceived);
        process.stdin.on('end', self.ended);
    }

    self.run = function () {
        readInput();
        process.on('uncaughtException', function (err) { self.failValue('uncaught exception in app', err); });
        process.on('unhandledRejection', function (err) {
            self.failValue('unhandled promise rejection in app', err);
        });
    };
}

// A CommonJS loader for the snapshot's modules, with Node's resolution for what packages such as
// vumigo_v02 and its dependencies use: relative paths, node_modules folders up the tree, a
// package's `main`, index.js, .json files and built-in modules. Anything else (an `exports` map,
// ES modules, native addons) throws, and the snapshot is not made: children then start from
// runner.js as usual. Returns the job's `from` and module `names`, and the loaded `modules` by
// file name.
function snapshotLoad(argv) {
    const arg = argv.find(function (a) { return a.startsWith('--preload='); });
    const modules = new Map();
    if (arg === undefined) {
        return {from: null, names: [], modules: modules};
    }
    const job = JSON.parse(arg.slice('--preload='.length));
    function isFile(file) {
        try {
            return fs.statSync(file).isFile();
        } catch (err) {
            return false;
        }
    }
    function usable(file) {
        if (/\.(node|mjs|cjs)$/.test(file)) {
            throw new Error('a snapshot cannot hold ' + file);
        }
        return file;
    }
    function asFile(file) {
        for (const candidate of [file, file + '.js', file + '.json']) {
            if (isFile(candidate)) {
                return usable(candidate);
            }
        }
        return null;
    }
    function asDirectory(dir) {
        const manifest = path.join(dir, 'package.json');
        if (isFile(manifest)) {
            const pkg = JSON.parse(fs.readFileSync(manifest, 'utf8'));
            if (pkg.exports !== undefined || pkg.type === 'module') {
                throw new Error('a snapshot cannot follow the package at ' + dir + ' (exports or type: module)');
            }
            if (typeof pkg.main === 'string' && pkg.main) {
                const main = path.resolve(dir, pkg.main);
                const found = asFile(main) || asIndex(main);
                if (found !== null) {
                    return found;
                }
            }
        }
        return asIndex(dir);
    }
    function asIndex(dir) {
        for (const candidate of [path.join(dir, 'index.js'), path.join(dir, 'index.json')]) {
            if (isFile(candidate)) {
                return candidate;
            }
        }
        return null;
    }
    function resolve(request, fromDir) {
        if (request.startsWith('./') || request.startsWith('../') || request.startsWith('/') ||
                request === '.' || request === '..') {
            const target = path.resolve(fromDir, request);
            return asFile(target) || asDirectory(target);
        }
        for (let dir = fromDir; ; dir = path.dirname(dir)) {
            if (path.basename(dir) !== 'node_modules') {
                const target = path.join(dir, 'node_modules', request);
                const found = asFile(target) || asDirectory(target);
                if (found !== null) {
                    return found;
                }
            }
            if (dir === path.dirname(dir)) {
                return null;
            }
        }
    }
    // The real path of the file `request` names from `fromDir`, or Node's MODULE_NOT_FOUND error.
    function located(request, fromDir) {
        const file = resolve(request, fromDir);
        if (file === null) {
            const err = new Error("Cannot find module '" + request + "'");
            err.code = 'MODULE_NOT_FOUND';
            throw err;
        }
        return fs.realpathSync(file);
    }
    function requireFrom(fromDir, request) {
        return Module.isBuiltin(request) ? require(request) : load(located(request, fromDir));
    }
    function load(file) {
        const known = modules.get(file);
        if (known !== undefined) {
            return known.exports;
        }
        const module = {exports: {}, id: file, filename: file, loaded: false, children: [], paths: []};
        modules.set(file, module);
        if (file.endsWith('.json')) {
            module.exports = JSON.parse(fs.readFileSync(file, 'utf8'));
        } else {
            const dir = path.dirname(file);
            const moduleRequire = function (request) { return requireFrom(dir, request); };
            moduleRequire.resolve = function (request) {
                return Module.isBuiltin(request) ? request : located(request, dir);
            };
            const wrapper = vm.compileFunction(fs.readFileSync(file, 'utf8'),
                                               ['exports', 'require', 'module', '__filename', '__dirname'],
                                               {filename: file});
            wrapper.call(module.exports, module.exports, moduleRequire, module, file, dir);
        }
        module.loaded = true;
        return module.exports;
    }
    const fromDir = path.dirname(path.resolve(job.from));
    job.modules.forEach(function (name) { requireFrom(fromDir, name); });
    return {from: job.from, names: job.modules, modules: modules};
}

// In a child started from the snapshot: Node's module cache takes the snapshot's modules, so the
// app's own require (app_context's) finds them loaded, as the preload would have left them; and
// the runner is the main module (`require.main`), as it is when node starts from runner.js.
// Each preloaded name is then required as the preload does (Module.createRequire of the app's
// file): it is found in the cache, and Node's resolution caches hold the name, as in a child
// preloaded from runner.js, so a spare's first message does not look the packages up again.
function adoptSnapshot(snapshot) {
    const main = new Module('.', null);
    main.filename = __filename;
    main.loaded = true;
    main.paths = Module._nodeModulePaths(__dirname);
    process.mainModule = main;
    Module._cache[__filename] = main;
    snapshot.modules.forEach(function (record, file) {
        const module = new Module(file, null);
        module.filename = file;
        module.exports = record.exports;
        module.loaded = true;
        module.paths = Module._nodeModulePaths(path.dirname(file));
        Module._cache[file] = module;
    });
    if (snapshot.from !== null) {
        const appRequire = Module.createRequire(snapshot.from);
        snapshot.names.forEach(function (name) {
            try {
                appRequire(name);
            } catch (err) {
                // As in preload.js: the app meets the error, reported as usual, when it requires it.
            }
        });
    }
}

if (BUILDING_SNAPSHOT) {
    require('v8').startupSnapshot.setDeserializeMainFunction(function () {
        adoptSnapshot(SNAPSHOT);
        new Runner().run();
    });
} else {
    new Runner().run();
}
