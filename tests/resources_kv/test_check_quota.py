"""``vxsandbox check`` shows each kv resource's effective key quota, as the worker will enforce it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from vxsandbox_core.testing import echo_worker_config


def check(tmp_path: Path, sandbox: dict[str, object]) -> list[str]:
    config = echo_worker_config("quota_transport")
    config["sandbox"].update(sandbox)
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_check_prints_every_kv_resources_quota(tmp_path: Path) -> None:
    """Defaults, an explicit pair and the deprecated synonym each show the hard and soft limit under their resource."""
    lines = check(tmp_path, {
        "kv": {"cls": "kv", "backend": "memory"},
        "big": {"cls": "kv", "backend": "memory", "keys_per_user_hard": 100000, "keys_per_user_soft": 90000},
        "old": {"cls": "vxsandbox.resources.kv.RedisResource", "backend": "memory", "keys_per_user": 50},
    })
    quota = {line: lines[i + 1] for i, line in enumerate(lines) if line.startswith("resource ")}
    by_name = {line.split(":")[0].split()[1]: below for line, below in quota.items()}
    assert by_name["kv"] == "  quota: keys_per_user_hard 100, keys_per_user_soft 80 (keys per sandbox_id)"
    assert by_name["big"] == "  quota: keys_per_user_hard 100000, keys_per_user_soft 90000 (keys per sandbox_id)"
    assert by_name["old"] == "  quota: keys_per_user_hard 50, keys_per_user_soft 40 (keys per sandbox_id)"
    assert not by_name["outbound"].startswith("  quota")
