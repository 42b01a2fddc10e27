
if (typeof seen === 'undefined') { seen = 0; }
api.on_inbound_message = function (command) {
    seen += 1;
    var content = command.msg.content;
    if (content === 'timer') {
        setTimeout(function () { api.log_info('late timer fired'); }, 200);
    }
    this.log_info('pid ' + pid + ' seen ' + seen + ' content ' + content, function () { this.done(); });
};

// version 2
