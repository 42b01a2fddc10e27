
        api.on_inbound_message = function () {
            var self = this, dir = argv.filter(function (a) { return a.indexOf('--code-cache=') === 0; })[0].slice(13);
            var result;
            try { require('fs').writeFileSync(dir + '/module-0000000000000000', 'planted'); result = 'written'; }
            catch (e) { result = e.code; }
            self.log_info('write: ' + result, function () { self.done(); });
        };
        