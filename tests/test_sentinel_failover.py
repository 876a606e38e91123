"""Redis Sentinel: the state store, the broker and the result backend all on one
Sentinel-managed primary; the primary fails over under send load.

Started here: 1 primary (AOF everysec), 1 replica (``--replicaof``), 3 sentinels
(``redis-server --sentinel``) that call the primary down after 1 s (the test's sentinel
configuration: infrastructure, not a wxtasks timeout), real Celery workers and beat with
``redis+sentinel://`` URLs. Messages are enqueued at a steady pace; mid-run the primary
freezes (``DEBUG SLEEP``, as a hung host would) and the sentinels promote the replica.

It prints: messages lost (accepted by the broker, never at the gateway and not reported
``unknown``; goal 0), messages sent twice whose result is not ``unknown`` (goal 0), and
the seconds from the freeze until sends flow again.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import Simulator, Stack, build, online, settings_for
from wxtasks.client import WxTasksClient
from wxtasks.dev.redis_server import find_redis_server, free_port
from wxtasks.dev.stack import Child, Supervisor, wait_until
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

MASTER = "wxmaster"
N_MESSAGES = 240
PACE_PER_S = 20.0
#: the primary freezes once this many messages are at the gateway (~3 s into the run)
FREEZE_AFTER = 60
#: how long the primary stays frozen: the sentinels promote the replica in ~3 s and every
#: client gives up on the frozen primary after its 5 s socket timeout, both well inside it
FREEZE_S = 25


def _major_version(binary: str) -> int:
    """redis-server's major version ("Redis server v=7.0.15 ..." -> 7)."""
    shown = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = re.search(r"v=(\d+)\.", shown)
    return int(found.group(1)) if found else 0


def _freeze(port: int, failed: list[BaseException]) -> None:
    client = redis.Redis(port=port, socket_timeout=FREEZE_S + 30)
    try:
        client.execute_command("DEBUG", "SLEEP", FREEZE_S)
    except redis.RedisError as exc:
        failed.append(exc)  # the freeze never reached it (or it was stopped meanwhile)
    finally:
        client.close()


def _ping(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def sentinels(supervisor: Supervisor, tmp_path: Path) -> Iterator[dict[str, Any]]:
    binary = find_redis_server()
    primary, replica = free_port(), free_port()
    children: list[Child] = []

    def server(name: str, port: int, *extra: str) -> None:
        data = tmp_path / name
        data.mkdir()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        if _major_version(binary) >= 7:  # DEBUG (the freeze) is off by default from 7.0
            args += ["--enable-debug-command", "yes"]
        children.append(supervisor.start(f"sentinel-test-{name}", [*args, *extra]))
        wait_until(lambda: _ping(port), 15, 0.05, f"redis {name}")

    server("primary", primary)
    server("replica", replica, "--replicaof", "127.0.0.1", str(primary))
    wait_until(
        lambda: redis.Redis(port=replica).info("replication").get("master_link_status") == "up",
        15,
        0.1,
        "the replica to sync",
    )
    ports = []
    for i in range(3):
        port = free_port()
        conf = tmp_path / f"sentinel-{i}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        children.append(supervisor.start(f"sentinel-test-s{i}", [binary, str(conf), "--sentinel"]))
        ports.append(port)
        wait_until(lambda p=port: _ping(p), 15, 0.05, f"sentinel {i}")
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    yield {
        "url": f"redis+sentinel://{hosts}/{MASTER}/0",
        "primary": primary,
        "replica": replica,
        "sentinels": ports,
    }
    for child in children:
        supervisor.stop(child, timeout_s=5)


def test_a_failover_under_send_load_loses_nothing_and_sends_nothing_twice(
    sentinels: dict[str, Any], simulator: Simulator, supervisor: Supervisor
) -> None:
    settings = settings_for(
        sentinels["url"],
        simulator,
        broker_url="",  # derived: kombu's sentinel:// form, db 1, the same master
        rate_per_second=200,
        burst=200,
        account_rate_per_second=100,
        account_burst=100,
        heartbeat_interval_s=3600,
    )
    assert settings.broker_url.startswith("sentinel://") and settings.sentinel_master == MASTER
    r = redis_client(settings.redis_url)
    store = build(r, settings).accounts
    ids = [f"ha-{i}" for i in range(8)]
    online(store, *ids)
    stack = Stack(settings, supervisor)
    stack.worker("send", "hasend", 4)
    stack.worker("control", "hactl", 1)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(2, timeout_s=60)

    client = WxTasksClient.from_settings(settings)
    results: dict[int, Any] = {}
    publish_errors: list[str] = []
    started, started_wall = time.monotonic(), time.time()

    def produce() -> None:
        for n in range(N_MESSAGES):
            due = started + n / PACE_PER_S
            time.sleep(max(0.0, due - time.monotonic()))
            kwargs = {"app_id": ids[n % len(ids)], "to_wxid": "wxid_ha", "content": f"ha #{n}"}
            for attempt in range(30):  # the producing app's own retry, as any app's would
                try:
                    results[n] = client.app.send_task(
                        "wxtasks.send_text", kwargs=kwargs, queue="send"
                    )
                    break
                except Exception as exc:
                    publish_errors.append(f"#{n} attempt {attempt}: {type(exc).__name__}")
                    time.sleep(0.5)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_until(lambda: len(simulator.sends()) >= FREEZE_AFTER, 60, 0.05, "the run under way")
    frozen_at = time.time()
    # the primary hangs as a hung host would: DEBUG SLEEP from a client of its own (this
    # process's, so the freeze is certain to be sent; its reply comes when it wakes)
    freeze_failed: list[BaseException] = []
    freezer = threading.Thread(
        target=_freeze, args=(sentinels["primary"], freeze_failed), daemon=True
    )
    freezer.start()
    watcher = redis.Redis(port=sentinels["sentinels"][0], decode_responses=True)
    wait_until(
        lambda: (
            freeze_failed
            or int(watcher.sentinel_get_master_addr_by_name(MASTER)[1]) == sentinels["replica"]
        ),
        60,
        0.05,
        "the sentinels to promote the replica",
    )
    assert not freeze_failed, f"the primary could not be frozen: {freeze_failed}"
    promoted_s = time.time() - frozen_at
    producer.join(timeout=120)
    assert not producer.is_alive()

    # each outcome read from the result backend itself, through the sentinels (the new
    # primary): the producer's result listener may stay on the old primary and miss what
    # was published meanwhile. A result stored on the old primary in the instant before
    # the freeze can be gone with it (Celery's backend is replicated asynchronously; the
    # send's claim waits for a replica first): such a message must be at the gateway.
    ids = {n: res.id for n, res in results.items()}

    def stored() -> dict[int, str]:
        try:
            raws = r.mget([f"celery-task-meta-{task_id}" for task_id in ids.values()])
        except (redis.ConnectionError, redis.TimeoutError):
            return {}
        metas = {n: json.loads(raw) for n, raw in zip(ids, raws, strict=True) if raw}
        return {n: m["result"]["status"] for n, m in metas.items() if m["status"] == "SUCCESS"}

    def settled() -> bool:
        done, at_gateway = stored(), {str(s["content"]) for s in simulator.sends()}
        return all(n in done or f"ha #{n}" in at_gateway for n in ids)

    wait_until(settled, 180, 0.5, "every outcome stored, or its message at the gateway")
    outcomes = stored()
    freezer.join(FREEZE_S)  # the primary woke long ago (as the old primary's replica)

    sends = simulator.sends()
    count = Counter(str(s["content"]) for s in sends)
    lost = [
        n
        for n in range(N_MESSAGES)
        if count[f"ha #{n}"] == 0 and outcomes.get(n) not in ("unknown", "failed")
    ]
    twice = [n for n in range(N_MESSAGES) if count[f"ha #{n}"] > 1 and outcomes.get(n) != "unknown"]
    after = sorted(float(s["at"]) for s in sends if float(s["at"]) >= frozen_at)
    before = [float(s["at"]) for s in sends if float(s["at"]) < frozen_at]
    recovered_s = (after[0] - frozen_at) if after else float("inf")
    gap = (after[0] - max(before)) if after and before else float("inf")
    print(
        f"\nsentinel failover under load: {N_MESSAGES} messages at {PACE_PER_S:g}/s, "
        f"primary frozen at +{frozen_at - started_wall:.1f}s\n"
        f"  replica promoted {promoted_s:.1f}s after the freeze\n"
        f"  sends flowed again {recovered_s:.1f}s after the freeze (longest gap {gap:.1f}s)\n"
        f"  lost: {len(lost)}   sent twice outside unknown: {len(twice)}   "
        f"outcomes: {dict(Counter(outcomes.values()))}   "
        f"publish retries by the producer: {len(publish_errors)}   "
        f"results gone with the old primary: {N_MESSAGES - len(outcomes)}"
    )
    assert lost == [], f"lost: {lost[:20]}"
    assert twice == [], f"sent twice: {twice[:20]}"
    assert set(outcomes.values()) <= {"sent", "unknown"}
    stack.stop()
    client.app.close()
    r.close()
