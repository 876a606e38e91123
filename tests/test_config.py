from __future__ import annotations

from pathlib import Path

import pytest

from wxtasks.config import ENV_NAMES, Settings
from wxtasks.errors import ConfigError


def test_defaults_follow_the_public_contract() -> None:
    s = Settings.from_env({})
    assert s.gateway_profile == "videosapi"
    assert s.gateway_timeout_s == 10
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.broker_url == "redis://localhost:6379/1"  # same Redis, db 1
    assert (s.rate_per_second, s.burst) == (5, 10)
    assert (s.account_rate_per_second, s.account_burst) == (1, 2)
    assert (s.dedup_ttl_s, s.heartbeat_interval_s, s.max_retry, s.backoff_max_s) == (300, 30, 5, 60)
    assert s.send_deadline_s == 600
    assert s.error_retry_interval_s == 1800


def test_environment_names_are_read() -> None:
    s = Settings.from_env(
        {
            "WECHATAPI_BASE_URL": "http://gw.example:2531/v2/api",
            "VIDEOS_API_TOKEN": "tok",
            "WECHATAPI_PROFILE": "gewe",
            "WXTASKS_REDIS_URL": "redis://:pw@cache:6380/3",
            "WXTASKS_RATE_PER_SECOND": "20",
            "WXTASKS_BURST": "5",
            "WXTASKS_HEARTBEAT_INTERVAL_S": "2",
        }
    )
    assert s.gateway_base_url == "http://gw.example:2531/v2/api"
    assert s.gateway_profile == "gewe"
    assert s.broker_url == "redis://:pw@cache:6380/1"
    assert s.rate_per_second == 20 and s.burst == 5 and s.heartbeat_interval_s == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WXTASKS_RATE_PER_SECOND", "-1"),
        ("WXTASKS_BURST", "0"),
        ("WXTASKS_BURST", "many"),
        ("WECHATAPI_PROFILE", "acme"),
        ("WXTASKS_REDIS_URL", "localhost:6379"),
        ("WECHATAPI_BASE_URL", "ftp://gw"),
        ("CELERY_BROKER_URL", "redis://host:notaport/1"),
        ("WXTASKS_ALERT_FORMAT", "slack"),
    ],
)
def test_a_bad_value_stops_startup_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_dotenv_in_working_directory_is_loaded_without_overriding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("WXTASKS_BURST=7\nWXTASKS_MAX_RETRY=9\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WXTASKS_MAX_RETRY", "2")
    monkeypatch.delenv("WXTASKS_BURST", raising=False)
    s = Settings.from_env()
    assert s.burst == 7
    assert s.max_retry == 2  # the real environment wins over .env
    monkeypatch.delenv("WXTASKS_BURST")


def test_the_token_is_not_in_the_repr() -> None:
    s = Settings.from_env({"VIDEOS_API_TOKEN": "s3cr3t-token"})
    assert "s3cr3t-token" not in repr(s)


def test_environ_round_trips_for_child_processes() -> None:
    s = Settings.from_env({"WXTASKS_BURST": "3", "WECHATAPI_PROFILE": "v1"})
    env = s.environ()
    assert set(env) == set(ENV_NAMES)
    assert Settings.from_env(env) == s
