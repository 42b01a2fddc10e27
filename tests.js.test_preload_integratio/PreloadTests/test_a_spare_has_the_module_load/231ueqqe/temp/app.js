
var lib = require('lib');
api.on_inbound_message = function (command) {
    var self = this, previous = lib.last;
    lib.last = command.msg.content;
    self.log_info('loads ' + lib.loads + ' previous ' + previous, function () { self.done(); });
};
