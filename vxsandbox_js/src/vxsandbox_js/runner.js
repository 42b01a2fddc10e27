// The vxsandbox Node.js runner: runs one untrusted app and relays its requests as JSON lines.
//
// Protocol (newline-delimited JSON on stdin/stdout, UTF-8 both ways):
//   worker -> runner: {"cmd": "initialize", "javascript": ..., "app_context": ..., "filename": ...}
//                     {"cmd": "inbound-message", "msg": {...}}, {"cmd": "inbound-event", ...},
//                     {"cmd": "exit"}, and replies ({"reply": true, "cmd_id": ...}) to the app's requests.
//   runner -> worker: requests {"cmd": "resource.command", "cmd_id": "1", "reply": false, ...}
//                     and finally {"cmd": "js.done"} once the app calls api.done().
//
// The app runs in a fresh vm context whose globals are `api`, `console` (routed to the log
// resource, since stdout is the protocol channel), the timer functions and whatever the trusted
// `app_context` expression gives (e.g. `{require: require}`). An uncaught exception or an
// unhandled promise rejection is logged through the `log` resource and ends the run with exit
// status 1, so a broken app never waits for the worker's timeout.
//
// Compatible with the Vumi JavaScript toolkit (npm `vumigo_v02`): `api.request(cmd, fields,
// callback)` calls `callback` with `this` = api; inbound commands go to `api.on_<cmd>` with `-`
// and `.` turned into `_`, else to `api.on_unknown_command`.
'use strict';

const path = require('path');
const vm = require('vm');
const Module = require('module');
const util = require('util');

// How long a fatal error waits for the log resource to acknowledge the report before exiting.
const FATAL_LOG_WAIT_MS = 2000;

function writeCommand(command) {
    // A pipe write is synchronous on POSIX, so nothing queued is lost by a later process.exit.
    process.stdout.write(JSON.stringify(command) + '\n');
}

function SandboxApi(runner) {
    const self = this;
    let lastId = 0;

    function nextId() {
        lastId += 1;
        return String(lastId);
    }

    self.request = function (cmd, fields, callback) {
        const command = Object.assign({}, fields || {});
        command.cmd = cmd;
        command.cmd_id = nextId();
        command.reply = false;
        if (typeof callback === 'function') {
            runner.pending.set(command.cmd_id, callback);
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
        if (runner.doneSent) {
            return;
        }
        self.log_info('Done.', function () {
            runner.finish();
        });
    };

    // The Vumi runners never answered commands without a handler; ending the run is kinder
    // than leaving it to the timeout, and apps (and the toolkit) replace this handler anyway.
    self.on_unknown_command = function (command) {
        self.log_warning('app has no handler for command ' + JSON.stringify(command.cmd) +
                         '; ending the run', function () {
            runner.finish();
        });
    };
}

function Runner() {
    const self = this;
    self.pending = new Map();
    self.loaded = false;
    self.doneSent = false;
    self.failing = false;
    self.queued = [];
    self.api = new SandboxApi(self);

    self.finish = function () {
        if (self.doneSent) {
            return;
        }
        self.doneSent = true;
        writeCommand({cmd: 'js.done', cmd_id: 'done', reply: false});
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
        self.api.log_error(what + ': ' + detail, exit);
    };

    self.makeConsole = function () {
        function line(args) {
            return util.format.apply(util, args);
        }
        return {
            log: function () { self.api.log_info(line(arguments)); },
            info: function () { self.api.log_info(line(arguments)); },
            debug: function () { self.api.log_debug(line(arguments)); },
            warn: function () { self.api.log_warning(line(arguments)); },
            error: function () { self.api.log_error(line(arguments)); },
        };
    };

    self.load = function (command) {
        const filename = typeof command.filename === 'string' && command.filename
            ? path.resolve(command.filename)
            : path.join(process.cwd(), 'app.js');
        // `require` given to app_context resolves modules next to the app, so a file-based
        // app finds its own node_modules.
        const appRequire = Module.createRequire(filename);
        let context = {};
        if (typeof command.app_context === 'string' && command.app_context.trim()) {
            const makeContext = new Function(
                'require', '__filename', '__dirname',
                'return (' + command.app_context + '\n);');
            context = makeContext(appRequire, filename, path.dirname(filename));
            if (context === null || typeof context !== 'object') {
                throw new TypeError('app_context must evaluate to an object, got ' + typeof context);
            }
        }
        const globals = {
            console: self.makeConsole(),
            setTimeout: setTimeout,
            clearTimeout: clearTimeout,
            setInterval: setInterval,
            clearInterval: clearInterval,
            setImmediate: setImmediate,
            clearImmediate: clearImmediate,
        };
        Object.assign(globals, context);
        globals.api = self.api;
        vm.createContext(globals);
        const script = new vm.Script(String(command.javascript || ''), {filename: filename});
        self.loaded = true;
        script.runInContext(globals);
    };

    self.dispatch = function (command) {
        const name = 'on_' + command.cmd.replace(/[-.]/g, '_');
        let handler = self.api[name];
        if (typeof handler !== 'function') {
            handler = self.api.on_unknown_command;
        }
        if (typeof handler === 'function') {
            const result = handler.call(self.api, command);
            if (result && typeof result.then === 'function') {
                result.then(null, function (err) { self.fail('app handler for ' + command.cmd + ' failed', err); });
            }
        }
    };

    self.reply = function (reply) {
        const callback = self.pending.get(reply.cmd_id);
        if (callback === undefined) {
            return;
        }
        self.pending.delete(reply.cmd_id);
        callback.call(self.api, reply);
    };

    self.handle = function (command) {
        if (command.cmd === 'exit') {
            process.exit(0);
        }
        if (command.reply === true) {
            self.reply(command);
            return;
        }
        if (!self.loaded) {
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
            self.api.log_warning('runner received a line that is not JSON, ignored: ' + line.slice(0, 200));
            return;
        }
        if (command === null || typeof command !== 'object' || typeof command.cmd !== 'string') {
            self.api.log_warning('runner received a line that is not a command, ignored: ' + line.slice(0, 200));
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

    self.run = function () {
        let buffer = '';
        process.stdin.setEncoding('utf8');
        process.stdin.on('data', function (chunk) {
            buffer += chunk;
            let end = buffer.indexOf('\n');
            while (end >= 0) {
                const line = buffer.slice(0, end);
                buffer = buffer.slice(end + 1);
                self.lineReceived(line);
                end = buffer.indexOf('\n');
            }
        });
        process.stdin.on('end', function () { process.exit(self.failing ? 1 : 0); });
        process.on('uncaughtException', function (err) { self.fail('uncaught exception in app', err); });
        process.on('unhandledRejection', function (err) { self.fail('unhandled promise rejection in app', err); });
    };
}

new Runner().run();
