
var lib = require('lib');
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info('lib says ' + lib.word + ' stats ' + stats(), function () { self.done(); });
};
