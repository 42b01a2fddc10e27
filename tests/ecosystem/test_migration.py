"""The migration guide's table of old keys and forms: each row's example does what the row says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vxsandbox_core.cli import check_config, with_worker_class
from vxsandbox_core.testing import echo_worker_config

from .conftest import ROOT

PAGE = ROOT / "docs" / "src" / "migration.md"
OUTCOMES = ("works", "deprecated", "refused")


def table_rows() -> list[tuple[str, str, str]]:
    """(old key or form, example YAML, what happens) for every row of 'Every old key and form'."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Every old key and form", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or cells[0] in ("Old key or form", "---|---|---") or set(cells[0]) <= {"-", "|"}:
            continue
        rows.append((cells[0], cells[1].strip("`"), cells[2]))
    return rows


ROWS = table_rows()


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_table_covers_every_deprecated_and_refused_key() -> None:
    """Every key the code deprecates or refuses has a row (so the table cannot fall behind the code)."""
    from vxsandbox_core.config import SandboxConfig
    from vxsandbox_resources_kv.config import RedisManagerConfig
    text = " ".join(form for form, _, _ in ROWS)
    keys = [*SandboxConfig.all_deprecated_keys(), *SandboxConfig.all_refused_keys(),
            *RedisManagerConfig.all_deprecated_keys()]
    assert len(ROWS) > 30
    assert [key for key in keys if f"`{key}`" not in text and f".{key}`" not in text] == []


@pytest.mark.node
@pytest.mark.parametrize("form, example, outcome", ROWS, ids=[r[0] for r in ROWS])
def test_row(form: str, example: str, outcome: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vxsandbox check` on the row's example works, warns or refuses, naming the key, as the row says."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.js").write_text("api.done();\n")
    (tmp_path / "config.json").write_text("{}")
    status = outcome.split("**")[1]
    assert status in OUTCOMES, outcome
    extra = yaml.safe_load(example)
    worker_class = re.search(r"--worker-class (\S+?)`", outcome)
    if "worker" in extra or worker_class:
        base: dict[str, Any] = {"transport_name": "old", "sandbox_id": "tenant"}
    else:
        base = echo_worker_config("old")
    raw = with_worker_class(merge(base, extra), worker_class.group(1) if worker_class else None)
    warnings: list[str] = []
    _, errors = check_config(raw, warnings=warnings)
    named = [m.group(1).rsplit(".", 1)[-1] for m in re.finditer(r"config key '([^']+)'", " ".join(errors + warnings))]
    if status == "works":
        assert (errors, warnings) == ([], [])
    elif status == "deprecated":
        assert errors == [] and warnings
        assert any(key in form + example for key in named), warnings
    else:
        assert errors
        assert any(key in form + example for key in named), errors
