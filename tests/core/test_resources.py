"""Tests of the resource author's toolkit in vxsandbox_core.resources."""

from __future__ import annotations

import pytest

from vxsandbox_core import describe_field, describe_type


@pytest.mark.parametrize(("value", "said"), [
    (None, "null"),
    (True, "a boolean true"),
    (5, "a number 5"),
    (1.5, "a number 1.5"),
    ("10", 'a string "10"'),
    (["k"], 'an array ["k"]'),
    ({"k": 1}, 'an object {"k": 1}'),
    ("x" * 50, "a string"),
    (list(range(30)), "an array"),
])
def test_describe_type_names_json_types_as_the_apps_author_sees_them(value, said):
    """A wrong value is described by its JSON type (never Python's), quoted as JSON when short."""
    assert describe_type(value) == said


def test_describe_field_tells_a_missing_field_from_a_null_one():
    """A field the request lacks is "nothing"; a present one is described as describe_type does."""
    assert describe_field({"cmd": "x"}, "to_addr") == "nothing"
    assert describe_field({"to_addr": None}, "to_addr") == "null"
    assert describe_field({"to_addr": 7}, "to_addr") == "a number 7"
