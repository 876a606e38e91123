"""docker-compose.yml cannot be started here (no Docker engine), so check that every
service runs a command the code has, with the environment names the code reads, and the
same worker roles the tests and `wxtasks dev` start; and that the stack exposes nothing by
default: no shared env_file, each secret only in the services that use it, the simulator
only in the `dev` profile, nothing but the callback receiver published beyond 127.0.0.1,
Redis with maxmemory and noeviction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from wxtasks.cli import main
from wxtasks.config import ENV_NAMES
from wxtasks.dev.stack import DISPATCHERS, celery_cmd, worker_args

ROOT = Path(__file__).resolve().parents[1]
# read by Flower and the redis image
EXTERNAL = {"FLOWER_BASIC_AUTH", "REDIS_PASSWORD", "REDIS_MAXMEMORY"}


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
        "dispatcher",
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
        "dispatcher",
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


def test_compose_runs_as_many_dispatchers_as_the_dev_stack_and_the_tests() -> None:
    from tests.conftest import Stack

    assert services()["dispatcher"]["deploy"]["replicas"] == DISPATCHERS == 2
    assert Stack.dispatchers.__defaults__ == (DISPATCHERS,)


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


#: each secret, and the only services that may hold it
SECRETS = {
    "VIDEOS_API_TOKEN": {"worker-send", "worker-control", "console", "simulator"},
    "WXTASKS_CONSOLE_USERS": {"console"},
    "WXTASKS_CONSOLE_SECRET": {"console"},
    "FLOWER_BASIC_AUTH": {"flower"},
    "WXTASKS_CALLBACK_SECRET": {"callbacks"},
    "WXTASKS_ALERT_WEBHOOK_URL": {"worker-send", "worker-control", "beat", "console"},
    "REDIS_PASSWORD": {"redis"},
}


def test_no_service_shares_an_env_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "env_file" not in text
    for name, service in services().items():
        assert "env_file" not in service, name


def test_each_secret_is_only_where_it_is_used() -> None:
    for name, service in services().items():
        env = service.get("environment") or {}
        for secret, allowed in SECRETS.items():
            if secret in env:
                assert name in allowed, f"{name} must not get {secret}"
        # the Redis password reaches wxtasks only inside the URLs of the state and broker
        for key, value in env.items():
            if "${REDIS_PASSWORD}" in str(value):
                assert name == "redis" or key in ("WXTASKS_REDIS_URL", "CELERY_BROKER_URL")
    callbacks = set(services()["callbacks"]["environment"])
    assert callbacks & {"VIDEOS_API_TOKEN", "WXTASKS_CONSOLE_USERS", "FLOWER_BASIC_AUTH"} == set()
    assert ":?" in services()["callbacks"]["environment"]["WXTASKS_CALLBACK_ALLOW_FROM"]


def test_the_simulator_runs_only_in_the_dev_profile() -> None:
    all_services = services()
    assert all_services["simulator"]["profiles"] == ["dev"]
    for name, service in all_services.items():
        if name != "simulator":
            assert "simulator" not in (service.get("depends_on") or {}), name
        base_url = str((service.get("environment") or {}).get("WECHATAPI_BASE_URL", ""))
        assert ":-http://simulator" not in base_url, f"{name} falls back to the simulator"
    env = services()["worker-send"]["environment"]
    assert env["WECHATAPI_BASE_URL"].startswith("${WECHATAPI_BASE_URL:?")


def test_only_the_callback_receiver_is_published_beyond_localhost() -> None:
    published = {}
    for name, service in services().items():
        for port in service.get("ports") or []:
            spec = str(port)
            published[name] = spec
            if name != "callbacks":
                assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} beyond localhost"
    assert published["callbacks"] == "8088:8088"
    assert "ports" not in services()["redis"]


def test_redis_never_evicts_and_has_a_memory_limit() -> None:
    from wxtasks import redismemory
    from wxtasks.events import alert_payload

    command = services()["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "${REDIS_MAXMEMORY:-1gb}"
    # ... and the alert on memory is one the alert texts know
    text = alert_payload("dingtalk", redismemory.ALERT, "", "90%", 0)["text"]["content"]
    assert "Redis" in text


def test_the_example_has_no_auto_reply_rule_and_no_usable_callback_secret() -> None:
    from wxtasks.errors import ConfigError
    from wxtasks.inbound.receiver import check_secret

    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["WXTASKS_AUTOREPLY_RULES"] == "{}"
    with pytest.raises(ConfigError, match="example"):
        check_secret(example["WXTASKS_CALLBACK_SECRET"])
    assert example["WXTASKS_CONSOLE_USERS"].endswith(":admin")
