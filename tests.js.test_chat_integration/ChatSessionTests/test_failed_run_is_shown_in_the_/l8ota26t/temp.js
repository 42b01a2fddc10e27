api.on_inbound_message = function() { throw new Error('nope'); };
