
api.on_inbound_message = function (command) {
    var self = this;
    self.log_info('version two', function () { self.done(); });
};
