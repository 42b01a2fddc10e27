// A vumigo_v02 USSD app that keeps its users in Vumi Go's contacts and groups resources.
//
// It asks a new user's name, stores it as an extra on their contact, puts them
// in the "Tea lovers" group and says how many members the group has; a user it
// knows is greeted by name. Run it with the contacts and groups resources
// configured (see vxsandbox_resources_contacts/README.md).
var vumigo = require('vumigo_v02');
var App = vumigo.App;
var FreeText = vumigo.states.FreeText;
var EndState = vumigo.states.EndState;

var ContactsApp = App.extend(function(self) {
    App.call(self, 'states:start');

    self.init = function() {
        return self.im.contacts.for_user().then(function(contact) {
            self.contact = contact;
        });
    };

    self.states.add('states:start', function(name) {
        if (self.contact.extra.name) {
            return self.states.create('states:known');
        }
        return new FreeText(name, {
            question: 'Hello! What is your name?',
            next: function(content) {
                self.contact.extra.name = content;
                return self.im.contacts.save(self.contact).then(function() {
                    return 'states:joined';
                });
            },
        });
    });

    self.states.add('states:joined', function(name) {
        return self.im.groups.get('Tea lovers', {create: true}).then(function(group) {
            self.contact.groups.push(group.key);
            return self.im.contacts.save(self.contact)
                .then(function() { return self.im.groups.sizeOf(group); })
                .then(function(size) {
                    return new EndState(name, {
                        text: 'Thanks ' + self.contact.extra.name + '! Tea lovers now has ' + size + ' member(s).',
                        next: 'states:start',
                    });
                });
        });
    });

    self.states.add('states:known', function(name) {
        return new EndState(name, {
            text: 'Welcome back, ' + self.contact.extra.name + '!',
            next: 'states:start',
        });
    });
});

if (typeof api !== 'undefined') {
    vumigo.interact(api, ContactsApp);
}
this.ContactsApp = ContactsApp;
