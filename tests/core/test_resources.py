"""Tests of the resource author's toolkit in vxsandbox_core.resources."""

from __future__ import annotations

import pytest

from vxsandbox_core import describe_type


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
