// A small app written against the raw sandbox API (no toolkit, no require).
//
// It greets the user, counts their messages in the kv store, and says
// goodbye (closing the USSD session) when they send "bye". Every reply
// goes through the outbound resource; api.done() ends each run.

api.on_inbound_message = function (command) {
    var msg = command.msg;
    var text = (msg.content || '').trim();
    var key = 'messages.' + msg.from_addr;

    if (msg.session_event === 'close') {
        // The user hung up: nothing to answer.
        this.log_info('session closed by ' + msg.from_addr, function () { this.done(); });
        return;
    }

    this.request('kv.incr', {key: key, amount: 1}, function (counted) {
        if (!counted.success) {
            this.log_error('kv.incr failed: ' + counted.reason, function () { this.done(); });
            return;
        }
        var bye = text.toLowerCase() === 'bye';
        var reply;
        if (msg.session_event === 'new') {
            reply = 'Hello! Say anything and I will count it. Say "bye" to leave.';
        } else if (bye) {
            reply = 'Goodbye! You sent ' + counted.value + ' messages.';
        } else {
            reply = 'Message ' + counted.value + ': you said "' + text + '" (' + text.length + ' characters).';
        }
        this.request('outbound.reply_to', {
            in_reply_to: msg.message_id,
            content: reply,
            continue_session: !bye,
        }, function (sent) {
            if (!sent.success) {
                this.log_error('reply failed: ' + sent.reason);
            }
            this.done();
        });
    });
};

api.on_inbound_event = function (command) {
    this.log_info('event ' + command.msg.event_type + ' for ' + command.msg.user_message_id,
                  function () { this.done(); });
};
