"""docs/src/getting-started.md works as written: every shell block, in order, in a fresh venv and a clone."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, Venv, clean_env

PAGE = ROOT / "docs" / "src" / "getting-started.md"


def shell_blocks() -> list[str]:
    """The page's ```sh blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def test_the_page_shows_the_shipped_config() -> None:
    """The worker.yaml the page shows is examples/vumigo_app/worker.yaml, byte for byte."""
    text = PAGE.read_text(encoding="utf-8")
    shown = text.split("<!-- example-worker-config -->\n```yaml\n", 1)[1].split("```", 1)[0]
    assert shown == (ROOT / "examples" / "vumigo_app" / "worker.yaml").read_text(encoding="utf-8")


def copy_clone(to: Path) -> None:
    """The files of this checkout a clone would have (committed or not, ignored ones left out)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def forget_example_users() -> None:
    """Delete the example config's keys from Redis, so its app meets its users for the first time."""
    with socket.create_connection(("127.0.0.1", 6379), timeout=10) as conn:
        script = "for _, k in ipairs(redis.call('keys', ARGV[1])) do redis.call('del', k) end return 0"
        command = ["EVAL", script, "0", "vxsandbox-example:*"]
        conn.sendall(f"*{len(command)}\r\n".encode() + b"".join(
            f"${len(part.encode())}\r\n{part}\r\n".encode() for part in command))
        assert conn.recv(64) == b":0\r\n"


@pytest.mark.slow
@pytest.mark.node
@pytest.mark.rabbitmq
@pytest.mark.redis
def test_getting_started_literally(fresh_venv: Venv, tmp_path: Path) -> None:
    """Install, chat, chat -c, check, run on RabbitMQ in the background, send and chat --amqp: all as the page says."""
    clone = tmp_path / "clone"
    copy_clone(clone)
    forget_example_users()
    script = "set -e\n" + "\n".join(shell_blocks()) + "wait\n"
    env = clean_env(PATH=f"{fresh_venv.path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                    VIRTUAL_ENV=str(fresh_venv.path))
    env.pop("VXSANDBOX_AMQP_URL", None)
    # Its own session, so whatever the script left running can be stopped with it.
    proc = subprocess.Popen(["bash", "-c", script], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out + err
    # chat on the embedded defaults, then the scripted order (tea, no milk)
    assert "app> Welcome to Tea Time! What would you like?" in out
    assert "you> 2\napp> One tea black coming up. Thank you!" in out
    # check
    assert "  quota: keys_per_user_hard 100000, keys_per_user_soft 80000 (keys per sandbox_id)" in out
    assert "worker.yaml: OK" in out
    # send: the replies came back on tea_ussd.outbound, to the messages send published
    assert "you> [new]\napp> Welcome to Tea Time! What would you like?\n     1. Tea\n     2. Coffee\n" in out
    assert "you> 1\napp> Milk with your tea?\n" in out
    # chat --amqp dialled the running worker, which remembered where send left the user
    assert out.count("[new session]\napp> Welcome to Tea Time!") == 3  # chat, chat --script, chat -c
    assert out.endswith("[new session]\napp> Milk with your tea?\n     1. Yes please\n     2. No thanks\n")
    # the worker ran on RabbitMQ, and stopped gracefully at the kill
    assert "consuming tea_ussd.inbound and tea_ussd.event" in err
    assert "stopping: no new messages" in err
    assert "Traceback" not in err
