"""The callback receiver as the internet meets it (issue: least privilege): it will not
start with a guessable secret, never logs one, answers only the gateways' network when
told to, refuses numbers and keys it could misread, and stores received messages within a
size; gateways' callback secrets are kept hashed; Redis warns before it is full."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import Simulator, build, settings_for
from wxtasks.config import Settings
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import Child, Supervisor, wait_until
from wxtasks.errors import BadInputError, ConfigError
from wxtasks.gateway.registry import secret_hash
from wxtasks.inbound.messages import GatewayEvent, InboundMessage, stored_record
from wxtasks.inbound.receiver import EXAMPLE_SECRET, CallbackSecrets, check_secret, decode_event
from wxtasks.keys import Keys

pytestmark = pytest.mark.timeout(120)
SECRET = "rcv-secret-0f9e8d7c6b5a4f3e2d1c0b9a8f7e"  # 38 characters


@pytest.fixture
def settings(redis_url: str, simulator: Simulator) -> Settings:
    return settings_for(redis_url, simulator, callback_secret=SECRET)


def start_receiver(supervisor: Supervisor, settings: Settings, **env: str) -> tuple[Child, str]:
    port = free_port()
    child = supervisor.start(
        f"callbacks-{port}",
        [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(port)],
        {**settings.environ(), "WXTASKS_LOG_FORMAT": "text", **env},
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert child.alive, Path(child.log_path).read_text()
        try:
            requests.get(url + "/callback/x", timeout=0.5)
            return True
        except requests.RequestException:
            return False

    wait_until(answers, 20, 0.05, "the receiver")
    return child, url


@pytest.mark.parametrize("secret", ["x", "short-but-not-32-characters", EXAMPLE_SECRET])
def test_the_receiver_refuses_to_start_with_a_weak_secret(secret: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", "WXTASKS_CALLBACK_SECRET": secret},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "WXTASKS_CALLBACK_SECRET" in done.stderr
    assert ("at least 32" in done.stderr) or ("example" in done.stderr)
    with pytest.raises(ConfigError):
        check_secret(secret)
    check_secret("k" * 32)  # 32 will do


def test_no_log_line_holds_a_secret_and_1e999_is_400(
    supervisor: Supervisor, settings: Settings, r: redis.Redis
) -> None:
    registry = build(r, settings).gateways
    other = registry.add("gw-b", base_url="http://127.0.0.1:9", profile="gewe", token_env="GW_B")
    child, url = start_receiver(supervisor, settings)
    event = {"TypeName": "ModContacts", "Appid": "shop", "Data": {}}
    cases = [
        (
            "post",
            f"/callback/{SECRET}",
            b'{"TypeName": "AddMsg", "Appid": "shop", "Data": {"NewMsgId": 1, "MsgType": 1e999}}',
            400,
        ),
        ("post", f"/callback/{SECRET}", b'{"TypeName": "Offline", "Appid": "shop", "x": NaN}', 400),
        (
            "post",
            f"/callback/{SECRET}",
            b'{"TypeName": "Offline", "Appid": "shop", "x": -Infinity}',
            400,
        ),
        (
            "post",
            f"/callback/{SECRET}",
            b'{"TypeName": "Offline", "Type_Name": "AddMsg", "Appid": "a"}',
            400,
        ),
        ("post", f"/callback/{SECRET}", b"not json", 400),
        ("post", f"/callback/{SECRET}", b"x" * 2_000_000, 413),
        ("post", f"/callback/{SECRET[:-1]}", json.dumps(event).encode(), 403),  # a near miss
        ("get", f"/callback/{SECRET}", b"", 405),
        ("post", f"/callback/{SECRET}/more", b"{}", 404),
        ("post", f"/callback/{other.callback_secret}", b"[", 400),
        ("post", f"/callback/{SECRET}", json.dumps(event).encode(), 200),
    ]
    for method, path, body, status in cases:
        reply = requests.request(method, url + path, data=body or None, timeout=10)
        assert reply.status_code == status, (path[:30], body[:60], reply.text)
    assert (
        "out of range"
        in requests.post(url + f"/callback/{SECRET}", data=cases[0][2], timeout=5).text
    )
    log_path = Path(child.log_path)
    wait_until(lambda: log_path.read_text().count("/callback/<redacted>") >= len(cases), 10)
    log = log_path.read_text()
    for secret in (SECRET, SECRET[:-1], other.callback_secret, SECRET[:12]):
        assert secret not in log
    assert "400 POST /callback/<redacted>" in log and "404 POST /callback/<redacted>" in log
    supervisor.stop(child)


def test_callbacks_only_from_the_allowed_network(
    supervisor: Supervisor, settings: Settings
) -> None:
    event = json.dumps({"TypeName": "ModContacts", "Appid": "shop", "Data": {}})
    child, url = start_receiver(supervisor, settings, WXTASKS_CALLBACK_ALLOW_FROM="10.0.0.0/8")
    reply = requests.post(f"{url}/callback/{SECRET}", data=event, timeout=5)
    assert reply.status_code == 403  # this host is not the gateways' network
    # a forwarded address is believed only from a trusted proxy
    spoofed = requests.post(
        f"{url}/callback/{SECRET}", data=event, headers={"X-Forwarded-For": "10.1.2.3"}, timeout=5
    )
    assert spoofed.status_code == 403
    supervisor.stop(child)
    child, url = start_receiver(
        supervisor,
        settings,
        WXTASKS_CALLBACK_ALLOW_FROM="10.0.0.0/8",
        WXTASKS_TRUSTED_PROXIES="127.0.0.1",
    )
    proxied = requests.post(
        f"{url}/callback/{SECRET}", data=event, headers={"X-Forwarded-For": "10.1.2.3"}, timeout=5
    )
    assert proxied.status_code == 200 and proxied.json() == {"ok": True, "handled": False}
    outside = requests.post(
        f"{url}/callback/{SECRET}", data=event, headers={"X-Forwarded-For": "192.0.2.9"}, timeout=5
    )
    assert outside.status_code == 403
    supervisor.stop(child)


@pytest.mark.parametrize(
    "body, why",
    [
        (
            b'{"TypeName": "AddMsg", "Appid": "a", "Data": {"NewMsgId": 1, "MsgType": 1e999}}',
            "out of range",
        ),
        (b'{"TypeName": "AddMsg", "Appid": "a", "Data": {"NewMsgId": Infinity}}', "Infinity"),
        (b'{"TypeName": "AddMsg", "Appid": "a", "Data": {"NewMsgId": NaN}}', "NaN"),
        (b'{"TypeName": "Offline", "Type_Name": "AddMsg", "Appid": "a"}', "same key"),
        (b'{"TypeName": "Offline", "typename": "AddMsg", "Appid": "a"}', "same key"),
        (
            b'{"TypeName": "AddMsg", "Appid": "a", "Data": {"NewMsgId": 1, "New_Msg_Id": 2}}',
            "same key",
        ),
        (b'{"TypeName": "Offline", "Appid": "a", "Appid": "b"}', "twice"),
    ],
)
def test_numbers_and_keys_that_could_be_misread_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(BadInputError, match=why):
        decode_event(body)


def test_a_stored_message_is_capped_and_flagged(r: redis.Redis, settings: Settings) -> None:
    def message(n: int, content: str) -> InboundMessage:
        event = GatewayEvent(
            "AddMsg",
            "shop",
            "wxid_shop",
            {
                "NewMsgId": n,
                "FromUserName": {"string": "wxid_c"},
                "ToUserName": {"string": "wxid_shop"},
                "Content": {"string": content},
            },
        )
        return InboundMessage.from_event(event)

    assert settings.inbound_max_bytes == 65_536  # the default
    store = build(r, settings).inbound
    big = "价格" * 100_000 + '"\\'  # 600 KB of UTF-8, and characters JSON escapes
    assert store.claim(message(1, big), "t1") == "new"
    assert store.claim(message(2, "small"), "t2") == "new"
    small, cut = store.list(2)
    assert small["content"] == "small" and "truncated" not in small
    assert cut["truncated"] is True and cut["content_bytes"] == len(big.encode())
    assert big.startswith(cut["content"]) and len(cut["content"]) > 20_000
    raw = r.lrange(Keys(settings.key_prefix).inbound, 0, -1)
    assert max(len(x.encode()) for x in raw) <= 65_536
    tiny = json.loads(stored_record(message(3, "x" * 500), 400))
    assert tiny["truncated"] and len(json.dumps(tiny, ensure_ascii=False).encode()) <= 400


def test_gateway_callback_secrets_are_stored_hashed(r: redis.Redis, settings: Settings) -> None:
    registry = build(r, settings).gateways
    g = registry.add("gw-a", base_url="http://127.0.0.1:9", profile="gewe", token_env="GW_A")
    assert len(g.callback_secret) >= 32  # told once, here
    stored = r.hgetall(Keys(settings.key_prefix).gateway("gw-a"))
    assert stored["callback_secret_hash"] == secret_hash(g.callback_secret)
    assert g.callback_secret not in json.dumps(stored)
    assert registry.get("gw-a").callback_secret == ""  # reading it back never tells it
    secrets = CallbackSecrets(settings, registry)
    assert secrets.gateway_for(g.callback_secret) == "gw-a"
    assert secrets.gateway_for(SECRET) == "default"
    assert secrets.gateway_for(secret_hash(g.callback_secret)) is None  # the hash is no key
    # a new secret works within a second (the receiver looks again on a miss, at most once
    # a second), not after the 5 s refresh; the old one stops
    fresh = registry.update("gw-a", new_callback_secret=True).callback_secret
    wait_until(lambda: secrets.gateway_for(fresh) == "gw-a", 1.5, 0.05, "the new secret")
    assert secrets.gateway_for(g.callback_secret) is None
    # a record from before secrets were hashed is rewritten when read, and keeps working
    key = Keys(settings.key_prefix).gateway("gw-a")
    r.hdel(key, "callback_secret_hash")
    r.hset(key, "callback_secret", "old-plain-secret-of-32-characters!")
    assert registry.get("gw-a").callback_secret_hash == secret_hash(
        "old-plain-secret-of-32-characters!"
    )
    assert "callback_secret" not in r.hgetall(key)


def test_redis_memory_alert_before_noeviction_refuses_writes(
    r: redis.Redis, settings: Settings
) -> None:
    from wxtasks import redismemory

    raised: list[tuple[str, str, str]] = []
    keys = Keys(settings.key_prefix)
    before = r.config_get("maxmemory")["maxmemory"]
    try:
        assert not redismemory.check(r, keys, lambda *a: raised.append(a))  # no limit: quiet
        used, _ = redismemory.usage(r)
        r.config_set("maxmemory", str(int(used / 0.85)))  # 85% used
        assert redismemory.check(r, keys, lambda *a: raised.append(a))
        assert not redismemory.check(r, keys, lambda *a: raised.append(a))  # once an hour
    finally:
        r.config_set("maxmemory", before)
    ((app_id, alert, reason),) = raised
    assert (app_id, alert) == ("", "redisMemory") and "maxmemory" in reason
    assert 0 < r.ttl(keys.alerted("redisMemory")) <= 3600


def test_the_receiver_runs_with_the_registry_secret_it_was_given(
    supervisor: Supervisor, redis_url: str, simulator: Simulator, r: redis.Redis
) -> None:
    """With no default secret, a registered gateway's (told once, stored hashed) works."""
    settings = settings_for(redis_url, simulator)
    g = build(r, settings).gateways.add(
        "gw-c", base_url="http://127.0.0.1:9", profile="gewe", token_env="GW_C"
    )
    child, url = start_receiver(supervisor, settings)
    body: Any = {"TypeName": "ModContacts", "Appid": "shop", "Data": {}}
    assert requests.post(f"{url}/callback/{g.callback_secret}", json=body, timeout=5).ok
    assert requests.post(f"{url}/callback/x", json=body, timeout=5).status_code == 403
    supervisor.stop(child)
