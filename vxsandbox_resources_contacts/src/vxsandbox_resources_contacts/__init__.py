"""vxsandbox-resources-contacts: Vumi Go's ``contacts``, ``groups`` and ``optout`` resources, in Redis or in memory."""

from .config import ContactsConfig, GroupsConfig, OptoutConfig, StoreConfig
from .errors import ContactsError, LimitExceededError, NotFoundError
from .keys import ContactsKeyScheme
from .memory import MemoryStore
from .redis_store import RedisStore
from .resources import ContactsResource, GroupsResource, OptoutResource
from .store import ContactsStore

__version__ = "1.4.2"

__all__ = [
    "ContactsConfig",
    "ContactsError",
    "ContactsKeyScheme",
    "ContactsResource",
    "ContactsStore",
    "GroupsConfig",
    "GroupsResource",
    "LimitExceededError",
    "MemoryStore",
    "NotFoundError",
    "OptoutConfig",
    "OptoutResource",
    "RedisStore",
    "StoreConfig",
    "__version__",
]
