
        var greet = require('greeter');
        api.on_inbound_message = function(command) {
            this.log_info(greet(command.msg.from_addr), function() { this.done(); });
        };
        