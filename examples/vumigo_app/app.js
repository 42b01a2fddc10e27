// A small USSD tea-ordering app written with the vumigo_v02 toolkit.
//
// vxsandbox runs it with app_context "{require: require}" so `require` finds
// vumigo_v02 in the node_modules folder next to this file (npm ci first).
var vumigo = require('vumigo_v02');
var App = vumigo.App;
var Choice = vumigo.states.Choice;
var ChoiceState = vumigo.states.ChoiceState;
var EndState = vumigo.states.EndState;

var TeaApp = App.extend(function(self) {
    App.call(self, 'states:start');

    self.states.add('states:start', function(name) {
        return new ChoiceState(name, {
            question: 'Welcome to ' + self.im.config.name + '! What would you like?',
            choices: [
                new Choice('tea', 'Tea'),
                new Choice('coffee', 'Coffee'),
            ],
            next: function(choice) {
                return 'states:milk:' + choice.value;
            },
        });
    });

    self.states.add('states:milk:tea', function(name) {
        return new ChoiceState(name, {
            question: 'Milk with your tea?',
            choices: [
                new Choice('yes', 'Yes please'),
                new Choice('no', 'No thanks'),
            ],
            next: 'states:end',
        });
    });

    self.states.add('states:milk:coffee', function(name) {
        return new ChoiceState(name, {
            question: 'Milk with your coffee?',
            choices: [
                new Choice('yes', 'Yes please'),
                new Choice('no', 'No thanks'),
            ],
            next: 'states:end',
        });
    });

    self.states.add('states:end', function(name) {
        var drink = self.im.user.answers['states:start'];
        var milk = self.im.user.answers['states:milk:' + drink] === 'yes' ? 'with milk' : 'black';
        return new EndState(name, {
            text: 'One ' + drink + ' ' + milk + ' coming up. Thank you!',
            next: 'states:start',
        });
    });
});

if (typeof api !== 'undefined') {
    vumigo.interact(api, TeaApp);
}
this.TeaApp = TeaApp;
