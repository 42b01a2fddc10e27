"""The Redis key scheme is injective, readable and keeps values apart from indexes."""

from __future__ import annotations

from typing import Any

from hypothesis import find, given
from hypothesis import strategies as st

from vxsandbox_resources_kv.keys import KeyScheme, escape_sandbox_id, unescape_sandbox_id

# Any Python text, weighted towards the separator and the escape sequences.
TEXT = st.lists(st.sampled_from(["#", "%", "2", "3", "5", "%23", "%25", "a"]) | st.characters()).map("".join)
PAIR = st.tuples(TEXT, TEXT)


@st.composite
def near_pairs(draw: st.DrawFn) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two pairs cut from the same words, joined by the separator or by would-be escapes of it.

    Independent pairs almost never collide under a weak scheme, so the
    property also gets pairs that differ only in where the sandbox_id ends
    or in how a '#' is written.
    """
    words = draw(st.lists(TEXT, min_size=2, max_size=4))

    def cut() -> tuple[str, str]:
        i = draw(st.integers(1, len(words) - 1))
        return draw(st.sampled_from(["#", "%23", "%25", "%"])).join(words[:i]), "#".join(words[i:])

    return cut(), cut()


TWO_PAIRS = st.one_of(st.tuples(PAIR, PAIR), near_pairs())
PREFIXES = st.sampled_from(["", "vumi", "a#b", "x:y%"])


@given(prefix=PREFIXES, pairs=TWO_PAIRS)
def test_distinct_pairs_never_share_a_name(prefix: str, pairs: tuple[tuple[str, str], tuple[str, str]]) -> None:
    """Two different (sandbox_id, key) pairs always get different value names."""
    scheme = KeyScheme(prefix)
    first, second = pairs
    if first != second:
        assert scheme.data_key(*first) != scheme.data_key(*second)


@given(prefix=PREFIXES, pair=PAIR)
def test_a_value_name_splits_back_into_its_pair(prefix: str, pair: tuple[str, str]) -> None:
    """parse_data_key inverts data_key, which is what makes the scheme injective."""
    scheme = KeyScheme(prefix)
    assert scheme.parse_data_key(scheme.data_key(*pair)) == pair


@given(prefix=PREFIXES, pair=PAIR, other=TEXT)
def test_value_names_never_equal_index_names(prefix: str, pair: tuple[str, str], other: str) -> None:
    """No value name is ever some sandbox's index name, and index names are injective too."""
    scheme = KeyScheme(prefix)
    assert scheme.data_key(*pair) != scheme.index_key(other)
    if pair[0] != other:
        assert scheme.index_key(pair[0]) != scheme.index_key(other)


@given(TEXT)
def test_escaping_round_trips_and_leaves_no_separator(sandbox_id: str) -> None:
    """An escaped sandbox_id holds no '#' and unescapes to itself."""
    escaped = escape_sandbox_id(sandbox_id)
    assert "#" not in escaped
    assert unescape_sandbox_id(escaped) == sandbox_id


def test_the_seeds_colliding_pair_is_kept_apart() -> None:
    """Sandbox 'a' key 'b#x' and sandbox 'a#b' key 'x', one name in the seed, are two names here."""
    scheme = KeyScheme()
    assert scheme.data_key("a", "b#x") == "sandboxes#a#b#x"
    assert scheme.data_key("a#b", "x") == "sandboxes#a%23b#x"


def test_ordinary_names_read_as_the_seeds_did() -> None:
    """Only '#' and '%' in a sandbox_id are escaped; keys and other characters stay verbatim."""
    scheme = KeyScheme("vumi")
    assert scheme.data_key("tea-shop_2", "users.+27831234567#visits") == \
        "vumi:sandboxes#tea-shop_2#users.+27831234567#visits"
    assert scheme.data_key("100%", "ü key") == "vumi:sandboxes#100%25#ü key"
    assert scheme.index_key("tea-shop_2") == "vumi:sandbox-keys#tea-shop_2"


def test_parse_rejects_foreign_names() -> None:
    """A name that is not a value name of this scheme is refused, not misread."""
    scheme = KeyScheme("vumi")
    for name in ("other:sandboxes#a#b", "vumi:sandbox-keys#a", "vumi:sandboxes#no-separator"):
        try:
            scheme.parse_data_key(name)
        except ValueError:
            continue
        raise AssertionError(f"{name!r} was parsed")


def test_the_property_catches_weaker_schemes() -> None:
    """The pairs the property draws find the seed's collision, and one from escaping '#' but not '%'."""
    def seed_name(pair: tuple[str, str]) -> str:
        return f"sandboxes#{pair[0]}#{pair[1]}"

    def hash_only_name(pair: tuple[str, str]) -> str:
        return f"sandboxes#{pair[0].replace('#', '%23')}#{pair[1]}"

    for weak in (seed_name, hash_only_name):
        def collides(p: tuple[tuple[str, str], tuple[str, str]], weak: Any = weak) -> bool:
            return p[0] != p[1] and bool(weak(p[0]) == weak(p[1]))

        first, second = find(TWO_PAIRS, collides)
        assert KeyScheme().data_key(*first) != KeyScheme().data_key(*second), (first, second)
