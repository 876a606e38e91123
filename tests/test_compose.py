"""docker-compose.yml cannot be started here (no Docker engine), so check that every
service runs a command the code has, with the environment names the code reads, and the
same worker roles the tests and `wxtasks dev` start."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from wxtasks.cli import main
from wxtasks.config import ENV_NAMES
from wxtasks.dev.stack import celery_cmd, worker_args

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = {"FLOWER_BASIC_AUTH", "REDIS_PASSWORD"}  # read by Flower and the redis image


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, Any]:
    return dict(compose()["services"])


def test_the_services_users_expect_exist() -> None:
    assert set(services()) == {
        "redis",
        "simulator",
        "worker-send",
        "worker-control",
        "beat",
        "flower",
        "metrics",
        "callbacks",
        "console",
        "prometheus",  # profile "monitoring": tests/test_overview.py
        "grafana",
    }


@pytest.mark.parametrize(
    "name",
    [
        "simulator",
        "worker-send",
        "worker-control",
        "beat",
        "flower",
        "metrics",
        "callbacks",
        "console",
    ],
)
def test_each_command_exists_in_the_code(name: str) -> None:
    command = services()[name]["command"]
    if command[0] == "wxtasks":
        ctx = main.make_context("wxtasks", list(command[1:]))
        sub = main.get_command(ctx, command[1])
        assert isinstance(sub, click.Command)
        sub.make_context(command[1], list(command[2:]))  # options parse
        return
    # the same app entry as the tests and `wxtasks dev` (python -m celery -A workers ...)
    assert command[:3] == celery_cmd()[2:5] == ["celery", "-A", "workers"]
    role = command[3]
    if role == "worker":
        queue = command[command.index("-Q") + 1]
        assert queue in ("send", "control")
        concurrency = command[command.index("-c") + 1]
        expected = worker_args(queue, queue, int(concurrency))[3:]
        for flag in ("-Q", "-n", "-c"):
            assert command[command.index(flag) + 1] == expected[expected.index(flag) + 1]
    else:
        assert role in ("beat", "flower")


def test_environment_names_are_ones_the_code_reads() -> None:
    for name, service in services().items():
        env = service.get("environment") or {}
        unknown = set(env) - ENV_NAMES - EXTERNAL
        assert not unknown, f"{name}: {unknown}"
    example = [
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert set(example) - ENV_NAMES - EXTERNAL == set()


def test_every_variable_compose_interpolates_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (ROOT / ".env.example").read_text()
    for name in used:
        assert re.search(rf"^{name}=", example, re.M), name


def test_the_console_has_no_default_password() -> None:
    env = services()["console"]["environment"]
    assert ":?" in env["WXTASKS_CONSOLE_USERS"]  # compose refuses to start without it
    assert "127.0.0.1:" in services()["console"]["ports"][0]


def test_redis_keeps_its_data_and_needs_a_password() -> None:
    command = " ".join(services()["redis"]["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
