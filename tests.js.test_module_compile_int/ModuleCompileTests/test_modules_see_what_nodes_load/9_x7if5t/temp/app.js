
var lib = require('lib');
api.on_inbound_message = function (command) {
    var self = this, where;
    try { lib.fail(); } catch (e) { where = /broken\.js:3/.test(e.stack) ? 'stack names broken.js:3' : e.stack; }
    self.log_info([lib.thisIsExports, lib.names, lib.resolved, lib.cached, lib.json, lib.bang, lib.esm,
                   where].join(' | '), function () { self.done(); });
};
