"""The Redis key scheme: one injective, operator-readable name per (sandbox_id, key) pair.

The seed named values ``sandboxes#<sandbox_id>#<key>``, so sandbox ``a`` key
``b#x`` and sandbox ``a#b`` key ``x`` were the same Redis key. Here the
sandbox_id ends at the first ``#`` that follows it, so ``#`` inside a
sandbox_id is written ``%23`` and, to keep the escape itself unambiguous,
``%`` is written ``%25``. Nothing else is escaped and the app's key is kept
verbatim (it runs to the end of the name), so a key name can always be split
back into its pair (:func:`parse_data_key`) and typical names read exactly as
the seed's did::

    <key_prefix>:sandboxes#<escaped sandbox_id>#<key>     the value (JSON)
    <key_prefix>:sandbox-keys#<escaped sandbox_id>         sorted set of the sandbox's
                                                           keys, scored by expiry (ms)

``sandboxes#`` and ``sandbox-keys#`` differ at their eighth character, so a
value's name never equals an index's name.
"""

from __future__ import annotations

import re

DATA_TAG = "sandboxes#"
INDEX_TAG = "sandbox-keys#"
# one left-to-right pass, so "%2523" (an escaped "%23") is not decoded twice
_ESCAPE = re.compile("%(25|23)")


def escape_sandbox_id(sandbox_id: str) -> str:
    """Escape ``%`` and ``#`` (only those) so the sandbox_id cannot contain the separator."""
    return sandbox_id.replace("%", "%25").replace("#", "%23")


def unescape_sandbox_id(escaped: str) -> str:
    """Undo :func:`escape_sandbox_id`."""
    return _ESCAPE.sub(lambda m: "#" if m.group(1) == "23" else "%", escaped)


class KeyScheme:
    """Builds the store's names for one resource.

    :param key_prefix: the operator's prefix (``redis_manager.key_prefix``);
        when not empty it is followed by ``separator`` (``:``) as Vumi's Redis manager did.
    """

    def __init__(self, key_prefix: str = "", separator: str = ":") -> None:
        self.prefix = f"{key_prefix}{separator}" if key_prefix else ""

    def data_key(self, sandbox_id: str, key: str) -> str:
        """The name holding the value of ``key`` for ``sandbox_id``."""
        return f"{self.prefix}{DATA_TAG}{escape_sandbox_id(sandbox_id)}#{key}"

    def index_key(self, sandbox_id: str) -> str:
        """The name of the sorted set of ``sandbox_id``'s keys (for its key count)."""
        return f"{self.prefix}{INDEX_TAG}{escape_sandbox_id(sandbox_id)}"

    def parse_data_key(self, name: str) -> tuple[str, str]:
        """Split a value's name back into ``(sandbox_id, key)``.

        :raises ValueError: ``name`` is not a value name of this scheme.
        """
        head = self.prefix + DATA_TAG
        if not name.startswith(head):
            raise ValueError(f"{name!r} does not start with {head!r}")
        escaped, sep, key = name[len(head):].partition("#")
        if not sep:
            raise ValueError(f"{name!r} has no '#' after the sandbox_id")
        return unescape_sandbox_id(escaped), key
