"""A send worker SIGKILLed mid-run loses nothing and sends nothing twice, with the settings
a user gets (visibility timeout and deadlines at their defaults); two worker instances
share one global token bucket (issue: send scheduling, "done when")."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from tests.conftest import Simulator, Stack, _simulator, build, online, over_envelope
from wxtasks.client import WxTasksClient
from wxtasks.config import Settings
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.runtime import redis_client
from wxtasks.send.deadletters import DeadLetters

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

RATE, BURST = 30, 10
#: every message the killed worker held is at the gateway (or dead-lettered) this soon
WITHIN_S = 60


@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "rabbitmq-quorum"])
def test_sigkill_mid_run_loses_nothing_and_the_limit_holds_across_workers(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
    broker: str,
    request: pytest.FixtureRequest,
) -> None:
    sim = _simulator(simulators, supervisor, "v1")
    on_rabbit: dict[str, Any] = {}
    if broker.startswith("rabbitmq"):
        on_rabbit["broker_url"] = request.getfixturevalue("rabbitmq_url")
        on_rabbit["quorum_queues"] = broker.endswith("quorum")
    stack = make_stack(
        sim,
        rate_per_second=RATE,
        burst=BURST,
        account_rate_per_second=10,
        account_burst=10,
        heartbeat_interval_s=3600,
        **on_rabbit,
    )
    defaults = Settings()
    assert stack.settings.visibility_timeout_s == defaults.visibility_timeout_s
    assert stack.settings.send_deadline_s == defaults.send_deadline_s
    r = redis_client(redis_url)
    store = build(r, stack.settings).accounts
    accounts = [f"acct-{i:02d}" for i in range(10)]
    online(store, *accounts)
    victim = stack.worker("send", "a", 2)
    stack.worker("send,control", "b", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(2)

    # 600 messages: 20 s at the global 30/s, the kill a third of the way in
    distinct = [(accounts[i % 10], f"wxid_{i % 7}", f"message {i}") for i in range(540)]
    repeats = [distinct[i * 9] for i in range(60)]
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

    wait_until(lambda: len(sim.sends()) >= 200, 60, what="the run to be under way")
    supervisor.kill(victim)  # SIGKILL the worker instance's main process
    killed_at = time.monotonic()
    stack.worker("send", "c", 2)  # and a new one comes up, as an orchestrator would

    dead_letters = DeadLetters(r, Keys(stack.settings.key_prefix))

    def settled() -> bool:
        at_gateway = {(s["appId"], s["toWxid"], s["content"]) for s in sim.sends()}
        dead = {(e["app_id"], e["to_wxid"], e["content"]) for e in dead_letters.list()}
        return all(m in at_gateway or m in dead for m in distinct)

    wait_until(settled, WITHIN_S, 0.5, f"every message at the gateway within {WITHIN_S}s")
    settled_s = time.monotonic() - killed_at
    outcomes = Counter(res.get(timeout=60)["status"] for res in results)
    sends = sim.sends()
    at_gateway = Counter((s["appId"], s["toWxid"], s["content"]) for s in sends)
    dead = dead_letters.list()
    twice = [m for m, n in at_gateway.items() if n > 1]
    print(
        f"\n[{broker}] enqueued {len(results)} ({len(distinct)} distinct), "
        f"outcomes {dict(outcomes)}, at gateway {len(at_gateway)} distinct / {len(sends)} "
        f"sends, sent twice {len(twice)}, dead-lettered {len(dead)}, lost 0, "
        f"settled {settled_s:.1f}s after the kill"
    )
    assert twice == []
    assert sum(outcomes.values()) == len(distinct) + len(repeats)
    assert all(e["status"] in ("failed", "unknown") and e["error"] for e in dead)
    assert outcomes["duplicate"] >= 60 - outcomes["unknown"]

    # the gateway never saw more than the bucket lets through in any window
    times = [s["at"] for s in sends]
    assert over_envelope(times, BURST, RATE) == []
    producer.close()
    r.close()
