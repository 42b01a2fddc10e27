// Loads the modules the worker names on the runner's command line before any message arrives.
//
// `--preload=<JSON {"from": app filename, "modules": [names]}>`: each name is required as the
// app's own `require` (Module.createRequire of the app's file) would, so the app later finds it
// in the module cache. Nothing tenant-specific exists yet (no api, no message), so a spare
// child can do this while it waits. A module that fails to load is left alone: Node keeps no
// failed module in its cache, so the app meets the same error, reported as usual, when it
// requires it during a run.
'use strict';

const Module = require('module');

const FLAG = '--preload=';

module.exports = function preload(argv) {
    const arg = argv.find(function (a) { return a.startsWith(FLAG); });
    if (arg === undefined) {
        return;
    }
    const job = JSON.parse(arg.slice(FLAG.length));
    const appRequire = Module.createRequire(job.from);
    job.modules.forEach(function (name) {
        try {
            appRequire(name);
        } catch (err) {
            // Reported when the app itself requires it (see above).
        }
    });
};
