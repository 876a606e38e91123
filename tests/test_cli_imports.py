"""A CLI that answers at once: each command imports only what it uses (Celery, kombu,
tornado, requests and the console only where they are needed), as `python -X importtime`
shows. The timings themselves are `python bench/cli_latency.py`'s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Simulator, build, online, settings_for
from wxtasks.runtime import redis_client

HEAVY = ("celery", "kombu", "tornado", "requests", "wxtasks.console", "prometheus_client")


def imported(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wxtasks", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}


def test_help_imports_nothing_heavy() -> None:
    modules = imported(["--help"])
    assert heavy(modules) == set() and "redis" not in modules


def test_accounts_list_and_status_import_only_what_they_use(
    redis_url: str, simulator: Simulator
) -> None:
    settings = settings_for(redis_url, simulator)
    client = redis_client(redis_url)
    online(build(client, settings).accounts, "imp-1")
    client.close()
    env = {**settings.environ(), "PATH": "/usr/bin:/bin"}
    listed = imported(["accounts", "list", "--json"], env)
    assert "redis" in listed and heavy(listed) == set()
    status = imported(["status"], env)
    # the queue depths need the broker's client (kombu); never Celery, tornado or the console
    assert {m.split(".")[0] for m in heavy(status)} <= {"kombu", "requests"}
    assert "celery" not in status


@pytest.mark.parametrize("args", [["send", "--help"], ["console", "--help"], ["dev", "--help"]])
def test_a_command_s_help_needs_nothing_heavy(args: list[str]) -> None:
    assert heavy(imported(args)) == set()
