// V8 code caches for the app and the modules it requires, read by the runner and made by the worker.
//
// Node's own code cache covers only its built-in modules and only under its default V8 flags;
// sandbox children run with --max-old-space-size (and the permission model), so every child
// compiles the toolkit, lodash, moment and the app from source. This file does two jobs:
//
// - In a child (`start(argv)`: the runner passes its arguments, where the worker puts --code-cache=DIR),
//   it takes over Module.prototype._compile: a module with a valid cache entry is compiled by
//   vm.Script from its cached data, anything else goes through Node's own _compile unchanged.
//   `script(source, filename)` does the same for the app's own code.
// - Run as a program (`node [the children's flags] compile_cache.js < job.json`), it is the
//   worker's producer: it compiles the app and the modules reachable from it by their literal
//   requires, and writes one entry per file to stdout (JSON lines, base64); the worker stores
//   them in a directory the children may only read. It only compiles, it never runs any of the
//   code it reads, so no app or module can influence what another child is handed.
//
// An entry is used only if it is whole and current: a header naming its layout, then the exact
// source it was made from (compared with the source being compiled, so an edited file never
// meets an old cache: V8 itself checks only the source's length), then V8's cached data. V8
// checks the data's node version and V8 flags, and its checksum only under
// --verify-snapshot-checksum (release builds skip it, and a flipped byte then crashes node or
// runs wrong code), which the worker therefore gives the producer and every child that reads
// the cache; a rejected entry shows as `cachedDataRejected` and the code is compiled from source.
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');
const Module = require('module');

const MAGIC = 0x31435856; // "VXC1"
const HEADER = 12; // magic, source bytes, data bytes
// Files the producer compiles at most, and the largest it reads: a bound on a hostile tree.
const MAX_FILES = 5000;
const MAX_FILE_BYTES = 8 * 1024 * 1024;
const LITERAL_REQUIRE = /\brequire\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g;

const stats = {accepted: 0, rejected: 0, invalid: 0, missing: 0};

function align4(n) {
    return (n + 3) & ~3;
}

// The entry's file name: a hash of what it caches (the app, or a module file by its path).
function entryName(kind, filename) {
    const key = kind + '\0' + filename;
    let a = 0x811c9dc5 | 0;
    let b = 0x9747b28c | 0;
    for (let i = 0; i < key.length; i++) {
        const c = key.charCodeAt(i);
        a = Math.imul(a ^ c, 0x01000193);
        b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 13);
    }
    return kind + '-' + (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}

function encodeEntry(source, data) {
    const sourceBytes = Buffer.from(source, 'utf8');
    const start = HEADER + align4(sourceBytes.length);
    const entry = Buffer.alloc(start + data.length);
    entry.writeUInt32LE(MAGIC, 0);
    entry.writeUInt32LE(sourceBytes.length, 4);
    entry.writeUInt32LE(data.length, 8);
    sourceBytes.copy(entry, HEADER);
    data.copy(entry, start);
    return entry;
}

// The cached data in `entry` if it is whole and was made from exactly `source`, else null.
function decodeEntry(entry, source) {
    if (entry.length < HEADER || entry.readUInt32LE(0) !== MAGIC) {
        return null;
    }
    const sourceLength = entry.readUInt32LE(4);
    const dataLength = entry.readUInt32LE(8);
    const start = HEADER + align4(sourceLength);
    if (start + dataLength !== entry.length) {
        return null;
    }
    if (entry.toString('utf8', HEADER, HEADER + sourceLength) !== source) {
        return null;
    }
    return entry.subarray(start);
}

let cacheDir = null;

function lookup(kind, filename, source) {
    let entry;
    try {
        entry = fs.readFileSync(path.join(cacheDir, entryName(kind, filename)));
    } catch (err) {
        stats.missing += 1;
        return null;
    }
    const data = decodeEntry(entry, source);
    if (data === null) {
        stats.invalid += 1;
    }
    return data;
}

function compiled(source, filename, data) {
    const script = new vm.Script(source, {filename: filename, cachedData: data});
    if (script.cachedDataRejected) {
        stats.rejected += 1;
    } else {
        stats.accepted += 1;
    }
    return script;
}

// What Node's own require function offers a module, built on the public Module API.
function makeRequire(mod) {
    const require = function require(id) {
        return mod.require(id);
    };
    require.resolve = function resolve(request, options) {
        return Module._resolveFilename(request, mod, false, options);
    };
    require.resolve.paths = function paths(request) {
        return Module._resolveLookupPaths(request, mod);
    };
    require.main = process.mainModule;
    require.extensions = Module._extensions;
    require.cache = Module._cache;
    return require;
}

// Use the entries in `dir` for modules and the app from now on.
function install(dir) {
    cacheDir = dir;
    const nodeCompile = Module.prototype._compile;
    Module.prototype._compile = function (content, filename) {
        const wrapped = Module.wrap(content);
        const data = lookup('module', filename, wrapped);
        if (data === null) {
            return nodeCompile.call(this, content, filename);
        }
        const wrapper = compiled(wrapped, filename, data).runInThisContext({displayErrors: true});
        return wrapper.call(this.exports, this.exports, makeRequire(this), this, filename, path.dirname(filename));
    };
}

// `--code-cache=DIR` among the runner's arguments: use that directory's entries.
function start(argv) {
    const arg = argv.find(function (a) { return a.startsWith('--code-cache='); });
    if (arg !== undefined) {
        install(arg.slice('--code-cache='.length));
    }
}

// The app's code compiled as the runner's vm.Script, from its cache entry when there is one.
function script(source, filename) {
    const data = cacheDir === null ? null : lookup('app', filename, source);
    if (data === null) {
        return new vm.Script(source, {filename: filename});
    }
    return compiled(source, filename, data);
}

// --- the producer ----------------------------------------------------------------------------

function emit(kind, filename, source) {
    const data = new vm.Script(source, {filename: filename}).createCachedData();
    const line = JSON.stringify({name: entryName(kind, filename), entry: encodeEntry(source, data).toString('base64')});
    fs.writeSync(1, line + '\n');
}

function resolveFrom(filename, request) {
    if (Module.isBuiltin(request)) {
        return null;
    }
    try {
        return Module.createRequire(filename).resolve(request);
    } catch (err) {
        return null;
    }
}

// job: {app: {source, filename} or null, from: filename requires resolve from, modules: [names]}
function produce(job) {
    let files = 0;
    if (job.app && typeof job.app.source === 'string') {
        emit('app', job.app.filename, job.app.source);
        files += 1;
    }
    const seen = new Set();
    const queue = [];
    function add(from, request) {
        const found = resolveFrom(from, request);
        if (found !== null && !seen.has(found) && /\.c?js$/.test(found)) {
            seen.add(found);
            queue.push(found);
        }
    }
    (job.modules || []).forEach(function (name) { add(job.from, name); });
    while (queue.length > 0 && seen.size <= MAX_FILES) {
        const filename = queue.shift();
        let content;
        try {
            if (fs.statSync(filename).size > MAX_FILE_BYTES) {
                continue;
            }
            content = fs.readFileSync(filename, 'utf8');
        } catch (err) {
            continue;
        }
        // A hashbang is valid only at the very start of a script, not inside Module.wrap's wrapper.
        if (!content.startsWith('#!')) {
            try {
                emit('module', filename, Module.wrap(content));
                files += 1;
            } catch (err) {
                // A syntax error: the child reports it when the app requires the file.
            }
        }
        // Literal requires anywhere in the text, comments included: compiling too much runs nothing.
        for (const match of content.matchAll(LITERAL_REQUIRE)) {
            add(filename, match[2]);
        }
    }
    fs.writeSync(1, JSON.stringify({done: true, files: files}) + '\n');
}

module.exports = {start: start, install: install, script: script, stats: stats, entryName: entryName,
                  encodeEntry: encodeEntry, decodeEntry: decodeEntry};

if (require.main === module) {
    produce(JSON.parse(fs.readFileSync(0, 'utf8')));
}
