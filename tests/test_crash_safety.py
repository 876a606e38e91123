"""A worker SIGKILLed mid-run loses nothing and sends nothing twice; two worker instances
share one global token bucket (issue: send pipeline, "done when")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from tests.conftest import Simulator, Stack, _simulator, online
from wxtasks.accounts import AccountStore
from wxtasks.client import WxTasksClient
from wxtasks.deadletters import DeadLetters
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.metrics import max_in_window
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

RATE, BURST = 20, 5


@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "rabbitmq-quorum"])
def test_sigkill_mid_run_loses_nothing_and_the_limit_holds_across_workers(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
    broker: str,
    request: pytest.FixtureRequest,
) -> None:
    sim = _simulator(simulators, supervisor, "videosapi")
    on_rabbit: dict[str, Any] = {}
    if broker.startswith("rabbitmq"):
        on_rabbit["broker_url"] = request.getfixturevalue("rabbitmq_url")
        on_rabbit["quorum_queues"] = broker.endswith("quorum")
    stack = make_stack(
        sim,
        rate_per_second=RATE,
        burst=BURST,
        account_rate_per_second=100,
        account_burst=100,
        send_deadline_s=10,
        visibility_timeout_s=12,
        heartbeat_interval_s=3600,
        **on_rabbit,
    )
    r = redis_client(redis_url)
    store = AccountStore(r, stack.settings)
    accounts = [f"acct-{i:02d}" for i in range(50)]
    online(store, *accounts)
    victim = stack.worker("send,control", "a", 2)
    stack.worker("send,control", "b", 2)
    stack.wait_workers(2)

    distinct = [(accounts[i % 50], f"wxid_{i % 7}", f"message {i}") for i in range(270)]
    repeats = [distinct[i * 9] for i in range(30)]
    if on_rabbit.get("quorum_queues"):
        # quorum queues must be declared with their arguments: a configured producer
        producer = WxTasksClient.from_settings(stack.settings).app
    else:  # a plain Celery producer, as other teams' apps are
        producer = Celery(broker=stack.settings.broker_url, backend=stack.settings.redis_url)
    results = [
        producer.send_task(
            "wxtasks.send_text", queue="send", kwargs={"app_id": a, "to_wxid": t, "content": c}
        )
        for a, t, c in distinct + repeats
    ]

    wait_until(lambda: len(sim.sends()) >= 60, 60, what="the run to be under way")
    supervisor.kill(victim)  # SIGKILL the worker instance's main process

    outcomes = Counter(res.get(timeout=200)["status"] for res in results)
    sends = sim.sends()
    at_gateway = Counter((s["appId"], s["toWxid"], s["content"]) for s in sends)
    dead = DeadLetters(r, Keys(stack.settings.key_prefix)).list()
    dead_keys = {(e["app_id"], e["to_wxid"], e["content"]) for e in dead}
    missing = [m for m in distinct if m not in at_gateway and m not in dead_keys]
    twice = [m for m, n in at_gateway.items() if n > 1]
    print(
        f"\nenqueued {len(results)} ({len(distinct)} distinct), outcomes {dict(outcomes)}, "
        f"at gateway {len(at_gateway)} distinct / {len(sends)} sends, "
        f"sent twice {len(twice)}, dead-lettered {len(dead)}, lost {len(missing)}"
    )
    assert missing == []
    assert twice == []
    assert sum(outcomes.values()) == 300
    assert all(e["status"] in ("failed", "unknown") for e in dead)
    assert outcomes["sent"] + outcomes["unknown"] >= 270 - outcomes["failed"]

    # the gateway never saw more than burst + rate*T (+1 for clock tolerance) in any window
    times = [s["at"] for s in sends]
    for width in (0.25, 0.5, 1.0, 2.0, 5.0):
        assert max_in_window(times, width) <= BURST + RATE * width + 1, width
    producer.close()
    r.close()
