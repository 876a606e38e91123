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


def test_the_docstring_and_readme_tables_are_the_settings_table() -> None:
    import wxtasks.config as config

    assert config.docstring_table() in (config.__doc__ or ""), (
        "wxtasks/config.py's docstring lists other settings than SETTINGS; paste in:\n"
        + config.docstring_table()
    )
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert config.markdown_table() in readme, (
        "README's Configuration table differs from SETTINGS; paste in:\n" + config.markdown_table()
    )


def test_every_setting_is_read_documented_and_round_trips() -> None:
    from wxtasks.config import SETTINGS

    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    assert "WXTASKS_BACKOFF_BASE_S" in ENV_NAMES and "WXTASKS_BEAT_LOCK_TTL_S" in ENV_NAMES
    s = Settings.from_env({"WXTASKS_BACKOFF_BASE_S": "2", "WXTASKS_BEAT_LOCK_TTL_S": "3"})
    assert (s.backoff_base_s, s.beat_lock_ttl_s) == (2, 3)
    assert all(setting.doc for setting in SETTINGS)
    with pytest.raises(ConfigError, match="WXTASKS_BEAT_LOCK_TTL_S must be > 0"):
        Settings.from_env({"WXTASKS_BEAT_LOCK_TTL_S": "0"})


def test_only_settings_reads_the_environment() -> None:
    package = Path(__file__).resolve().parents[1] / "wxtasks"
    readers = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "config.py"
        and any(word in path.read_text() for word in ("os.environ", "getenv", "load_dotenv"))
    ]
    assert readers == []
