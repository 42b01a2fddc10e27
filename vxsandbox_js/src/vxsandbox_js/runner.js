// The vxsandbox Node.js runner: runs one untrusted app and relays its requests as JSON lines.
//
// Protocol (newline-delimited JSON on stdin/stdout, UTF-8 both ways):
//   worker -> runner: {"cmd": "initialize", "javascript": ..., "app_context": ..., "filename": ...}
//                     {"cmd": "inbound-message", "msg": {...}}, {"cmd": "inbound-event", ...},
//                     {"cmd": "exit"}, and replies ({"reply": true, "cmd_id": ...}) to the app's requests.
//   runner -> worker: requests {"cmd": "resource.command", "cmd_id": "1", "reply": false, ...}
//                     and finally {"cmd": "js.done"} once the app calls api.done().
//
// `initialize` compiles the app once. Every inbound command (one message or event: one run)
// then gets a fresh vm context in which the app's code runs again, whose globals are a fresh
// `api`, `console` (routed to the log resource, since stdout is the protocol channel), the timer
// functions and whatever the trusted `app_context` expression gives (e.g. `{require: require}`).
// So a warm runner serving many messages of one tenant carries no global state from one message
// to the next; when the app calls `api.done()` its timers are cleared and its old `api` goes
// quiet. Modules loaded through `require` stay cached for the process, as in any Node program.
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

// Set up by the worker on the command line (--code-cache=DIR, --preload=JSON): compiled code
// cached by the worker, and the app's modules loaded before any message. See those two files.
const compileCache = require('./compile_cache.js');
const preload = require('./preload.js');
compileCache.start(process.argv);
preload(process.argv);

// How long a fatal error waits for the log resource to acknowledge the report before exiting.
const FATAL_LOG_WAIT_MS = 2000;
const READ_SIZE = 65536;
const NEWLINE = 10;

// Blocks the thread for `ms` (a pipe that was made non-blocking and is full must be waited for).
const pause = (function () {
    const cell = new Int32Array(new SharedArrayBuffer(4));
    return function (ms) { Atomics.wait(cell, 0, 0, ms); };
}());

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

function writeCommand(command) {
    // Synchronous, so nothing written is lost by a later process.exit.
    writeAll(1, Buffer.from(JSON.stringify(command) + '\n', 'utf8'));
}

function SandboxApi(runner, session) {
    const self = this;

    self.request = function (cmd, fields, callback) {
        if (session.closed) {
            // The run is over (the app called done); a late request belongs to no message.
            return null;
        }
        const command = Object.assign({}, fields || {});
        command.cmd = cmd;
        command.cmd_id = runner.nextId();
        command.reply = false;
        if (typeof callback === 'function') {
            session.pending.set(command.cmd_id, callback);
        }
        writeCommand(command);
        return command.cmd_id;
    };

    function logger(level) {
        return function (msg, callback) {
            return self.request('log.' + level, {msg: String(msg)}, callback);
        };
    }

    self.log_debug = logger('debug');
    self.log_info = logger('info');
    self.log_warning = logger('warning');
    self.log_error = logger('error');
    self.log_critical = logger('critical');
    self.log = function (msg, level, callback) {
        return self.request('log.' + (level || 'info'), {msg: String(msg)}, callback);
    };

    self.done = function () {
        if (session.doneRequested) {
            return;
        }
        session.doneRequested = true;
        self.log_info('Done.', function () {
            runner.finish(session);
        });
    };

    // The Vumi runners never answered commands without a handler; ending the run is kinder
    // than leaving it to the timeout, and apps (and the toolkit) replace this handler anyway.
    self.on_unknown_command = function (command) {
        self.log_warning('app has no handler for command ' + JSON.stringify(command.cmd) +
                         '; ending the run', function () {
            runner.finish(session);
        });
    };
}

// One run: the api, context, pending callbacks and timers of one inbound message or event.
function Session(runner) {
    this.pending = new Map();
    this.timers = new Set();
    this.doneRequested = false;
    this.closed = false;
    this.api = new SandboxApi(runner, this);
}

Session.prototype.close = function () {
    this.closed = true;
    this.pending.clear();
    this.timers.forEach(function (timer) {
        clearTimeout(timer);
        clearInterval(timer);
        clearImmediate(timer);
    });
    this.timers.clear();
};

function Runner() {
    const self = this;
    let lastId = 0;
    self.app = null;
    self.session = null;
    self.failing = false;
    self.queued = [];

    self.nextId = function () {
        lastId += 1;
        return String(lastId);
    };

    // A session for messages about the runner itself (load errors) before any run began.
    self.currentApi = function () {
        if (self.session === null) {
            self.session = new Session(self);
        }
        return self.session.api;
    };

    self.finish = function (session) {
        if (session.closed) {
            return;
        }
        session.close();
        if (self.session === session) {
            self.session = null;
        }
        writeCommand({cmd: 'js.done', cmd_id: self.nextId(), reply: false});
    };

    self.fail = function (what, err) {
        if (self.failing) {
            return;
        }
        self.failing = true;
        let detail;
        if (err && typeof err.stack === 'string') {
            // The runner's own frames and Node's internals say nothing to the app's author.
            detail = err.stack.split('\n').filter(function (frame) {
                return frame.indexOf(__filename) < 0 && !/\(node:|at node:/.test(frame);
            }).join('\n');
        } else {
            detail = util.inspect(err);
        }
        const exit = function () { process.exit(1); };
        const timer = setTimeout(exit, FATAL_LOG_WAIT_MS);
        timer.unref();
        const api = self.session !== null && !self.session.closed ? self.session.api : new Session(self).api;
        api.log_error(what + ': ' + detail, exit);
    };

    function makeConsole(api) {
        function line(args) {
            return util.format.apply(util, args);
        }
        return {
            log: function () { api.log_info(line(arguments)); },
            info: function () { api.log_info(line(arguments)); },
            debug: function () { api.log_debug(line(arguments)); },
            warn: function () { api.log_warning(line(arguments)); },
            error: function () { api.log_error(line(arguments)); },
        };
    }

    // Timer functions whose handles die with the session, so a timer set while handling one
    // message never fires into the next.
    function sessionTimers(session) {
        function track(start) {
            return function () {
                const handle = start.apply(null, arguments);
                session.timers.add(handle);
                return handle;
            };
        }
        return {
            setTimeout: track(setTimeout),
            setInterval: track(setInterval),
            setImmediate: track(setImmediate),
            clearTimeout: clearTimeout,
            clearInterval: clearInterval,
            clearImmediate: clearImmediate,
        };
    }

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
            script: compileCache.script(String(command.javascript || ''), filename),
            context: function () {
                if (makeContext === null) {
                    return {};
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

    // Start a run: a fresh context in which the app's code runs, with a fresh api.
    self.begin = function () {
        const session = self.session !== null && !self.session.closed ? self.session : new Session(self);
        self.session = session;
        const globals = Object.assign({console: makeConsole(session.api)}, sessionTimers(session));
        Object.assign(globals, self.app.context());
        globals.api = session.api;
        vm.createContext(globals);
        self.app.script.runInContext(globals);
        return session;
    };

    self.dispatch = function (command) {
        const session = self.begin();
        const api = session.api;
        const name = 'on_' + command.cmd.replace(/[-.]/g, '_');
        let handler = api[name];
        if (typeof handler !== 'function') {
            handler = api.on_unknown_command;
        }
        if (typeof handler === 'function') {
            const result = handler.call(api, command);
            if (result && typeof result.then === 'function') {
                result.then(null, function (err) { self.fail('app handler for ' + command.cmd + ' failed', err); });
            }
        }
    };

    self.reply = function (reply) {
        const session = self.session;
        if (session === null) {
            return;
        }
        const callback = session.pending.get(reply.cmd_id);
        if (callback === undefined) {
            return;
        }
        session.pending.delete(reply.cmd_id);
        callback.call(session.api, reply);
    };

    self.handle = function (command) {
        if (command.cmd === 'exit') {
            process.exit(0);
        }
        if (command.reply === true) {
            self.reply(command);
            return;
        }
        if (self.app === null) {
            if (command.cmd === 'initialize') {
                try {
                    self.load(command);
                } catch (err) {
                    self.fail('app failed to load', err);
                    return;
                }
                const queued = self.queued;
                self.queued = [];
                queued.forEach(self.safeDispatch);
            } else {
                self.queued.push(command);
            }
            return;
        }
        if (command.cmd === 'initialize') {
            return;
        }
        self.safeDispatch(command);
    };

    self.safeDispatch = function (command) {
        try {
            self.dispatch(command);
        } catch (err) {
            self.fail('app handler for ' + command.cmd + ' failed', err);
        }
    };

    self.lineReceived = function (line) {
        if (!line.trim()) {
            return;
        }
        let command;
        try {
            command = JSON.parse(line);
        } catch (err) {
            self.currentApi().log_warning('runner received a line that is not JSON, ignored: ' + line.slice(0, 200));
            return;
        }
        if (command === null || typeof command !== 'object' || typeof command.cmd !== 'string') {
            self.currentApi().log_warning('runner received a line that is not a command, ignored: ' +
                                          line.slice(0, 200));
            return;
        }
        if (self.failing) {
            // Only the reply to the fatal error report matters now.
            if (command.reply === true) {
                self.reply(command);
            }
            return;
        }
        try {
            self.handle(command);
        } catch (err) {
            self.fail('app callback for ' + command.cmd + ' failed', err);
        }
    };

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
        process.on('uncaughtException', function (err) { self.fail('uncaught exception in app', err); });
        process.on('unhandledRejection', function (err) { self.fail('unhandled promise rejection in app', err); });
    };
}

new Runner().run();
