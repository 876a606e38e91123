"""Accounts spread over several gateways, end to end (v1 profile): real workers and beat,
three simulated gateways in one simulator process, each with its own token.

1. Each account's sends arrive at its own gateway with that gateway's token; each
   gateway's bucket holds its envelope and the fleet bucket holds the total.
2. One gateway stops answering: its accounts show "gateway down" (not ERROR) with one
   alert; within 2 heartbeat intervals after it returns they are ONLINE; the other
   accounts' heartbeats and sends go on.
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from celery import Celery

from tests.conftest import Stack, build, db, over_envelope
from wxtasks.accounts.machine import Event, State
from wxtasks.config import Settings
from wxtasks.dev.stack import Child, Supervisor, wait_until
from wxtasks.events import read_events
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

N_GATEWAYS = 3
HEARTBEAT_S = 3.0
GW_RATE, GW_BURST = 2.0, 2  # as registered below
FLEET_RATE, FLEET_BURST = 4.0, 3
PREFIX = "fleet-tok-"
HB_PATH = "/v1/account/heartbeat"


@dataclass
class Gateways:
    port: int

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port + i - 1}"

    def admin(self, i: int, what: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            return requests.get(f"{self.url(i)}/admin/{what}", timeout=5).json()
        return requests.post(f"{self.url(i)}/admin/{what}", json=body, timeout=5).json()

    def sends(self, i: int) -> list[dict[str, Any]]:
        return list(self.admin(i, "sends")["sends"])

    def calls(self, i: int, path: str) -> int:
        return int(self.admin(i, "stats")["calls"].get(path, 0))


class FleetStack(Stack):
    token_env: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.token_env}


@pytest.fixture
def fleet(supervisor: Supervisor, redis_url: str) -> Iterator[dict[str, Any]]:
    sim, gws = _start_gateways(supervisor)
    settings = Settings.from_env(
        {},
        redis_url=redis_url,
        broker_url=db(redis_url, 1),
        gateway_base_url="http://127.0.0.1:1",  # the default gateway serves nobody here
        gateway_profile="v1",
        gateway_timeout_s=2.0,
        heartbeat_interval_s=HEARTBEAT_S,
        rate_per_second=FLEET_RATE,
        burst=FLEET_BURST,
        account_rate_per_second=100,
        account_burst=100,
        gateway_down_failures=2,
        gateway_down_after_s=1,
        gateway_probe_interval_s=2,
    )
    r = redis_client(redis_url)
    registry = build(r, settings).gateways
    stack = FleetStack(settings, supervisor)
    stack.token_env = {}
    for i in range(1, N_GATEWAYS + 1):
        var = f"WX_FLEET_TEST_TOKEN_{i}"
        stack.token_env[var] = f"{PREFIX}{i}"
        registry.add(
            f"gw-{i}",
            base_url=gws.url(i),
            profile="v1",
            token_env=var,
            rate=GW_RATE,
            burst=GW_BURST,
        )
    store = build(r, settings).accounts
    accounts = {i: [f"g{i}-a", f"g{i}-b"] for i in range(1, N_GATEWAYS + 1)}
    for i, ids in accounts.items():
        for app_id in ids:
            store.register(app_id, gateway=f"gw-{i}")
            store.transition(app_id, Event.LOGIN_SUCCEEDED)
    stack.worker("send", "fsend", 2)
    stack.worker("control", "fctl", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(2)
    producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
    yield {
        "r": r,
        "gws": gws,
        "store": store,
        "settings": settings,
        "accounts": accounts,
        "producer": producer,
    }
    producer.close()
    stack.stop()
    supervisor.stop(sim)
    r.close()


def _consecutive_free_ports(n: int) -> int:
    """The first of ``n`` consecutive ports that bind now, below the kernel's ephemeral
    range (where any process's outgoing connection may take one at any time)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_from = int(f.read().split()[0])
    for _ in range(100):
        first = random.randrange(10_000, ephemeral_from - n)
        sockets = [socket.socket() for _ in range(n)]
        try:
            for i, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", first + i))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def _start_gateways(supervisor: Supervisor) -> tuple[Child, Gateways]:
    """One simulator process serving N_GATEWAYS gateways on consecutive ports; started
    again on other ports if one was taken between the check and its bind."""
    for _ in range(5):
        port = _consecutive_free_ports(N_GATEWAYS)
        args = ["--port", str(port), "--profile", "v1", "--gateways", str(N_GATEWAYS)]
        sim = supervisor.start(
            f"fleet-simulator-{port}",
            [sys.executable, "-m", "wxtasks", "simulator", *args, "--token-prefix", PREFIX],
        )
        gws = Gateways(port)
        wait_until(
            lambda: not sim.alive or _answers(gws.url(N_GATEWAYS)),  # noqa: B023
            20,
            0.05,
            "the simulated gateways",
        )
        if sim.alive:
            return sim, gws
    raise RuntimeError("the simulated gateways could not bind their ports")


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/admin/stats", timeout=0.5).ok
    except requests.RequestException:
        return False


def _send(producer: Celery, app_id: str, content: str) -> Any:
    return producer.send_task(
        "wxtasks.send_text",
        kwargs={"app_id": app_id, "to_wxid": "wxid_friend", "content": content},
        queue="send",
    )


def test_sends_go_to_their_own_gateway_within_each_bucket_and_the_fleets(
    fleet: dict[str, Any],
) -> None:
    gws, accounts, producer = fleet["gws"], fleet["accounts"], fleet["producer"]
    per_account = 6
    results = [
        _send(producer, app_id, f"{app_id} #{n}")
        for n in range(per_account)
        for ids in accounts.values()
        for app_id in ids
    ]
    outcomes = [res.get(timeout=120)["status"] for res in results]
    assert outcomes == ["sent"] * len(results)
    everything: list[float] = []
    for i, ids in accounts.items():
        sends = gws.sends(i)
        # each send arrived at its own gateway (which checks its own token)
        assert sorted({s["appId"] for s in sends}) == sorted(ids), f"gw-{i}"
        assert len(sends) == per_account * len(ids)
        times = [float(s["at"]) for s in sends]
        everything += times
        assert over_envelope(times, GW_BURST, GW_RATE) == [], f"gw-{i}'s bucket"
    assert over_envelope(everything, FLEET_BURST, FLEET_RATE) == [], "the fleet bucket"
    span = max(everything) - min(everything)
    print(
        f"\n{len(everything)} sends over {span:.1f}s: {len(everything) / span:.2f}/s "
        f"(fleet limit {FLEET_RATE}/s, each gateway {GW_RATE}/s)"
    )
    assert fleet["r"].get("wx:bucket:gw:default") is None


def test_a_gateway_that_stops_answering_pauses_only_its_accounts(
    fleet: dict[str, Any],
) -> None:
    r, gws, store, settings = fleet["r"], fleet["gws"], fleet["store"], fleet["settings"]
    accounts, producer = fleet["accounts"], fleet["producer"]
    fl = build(r, settings).fleet
    down_ids, other_ids = accounts[2], accounts[1] + accounts[3]
    wait_until(
        lambda: all(a.last_heartbeat_at for a in store.get_many(other_ids + down_ids)),
        4 * HEARTBEAT_S,
        what="a first heartbeat everywhere",
    )

    gws.admin(2, "faults", {"outage": True})
    t_out = time.time()
    wait_until(lambda: fl.is_down("gw-2"), 30, 0.1, "gw-2 marked down")
    print(f"\ngw-2 marked down {time.time() - t_out:.1f}s after it stopped answering")
    parked = _send(producer, down_ids[0], "while its gateway is down")
    calls_at_down = gws.calls(2, HB_PATH)
    hb_before = {a.app_id: a.last_heartbeat_at or 0 for a in store.get_many(other_ids)}
    held_s = 4 * HEARTBEAT_S
    sent_meanwhile = [
        _send(producer, app_id, f"during the outage {app_id}") for app_id in other_ids
    ]
    assert [res.get(timeout=30)["status"] for res in sent_meanwhile] == ["sent"] * 4
    time.sleep(held_s)  # the outage lasts: what happens meanwhile is the point
    during = gws.calls(2, HB_PATH) - calls_at_down
    for a in store.get_many(down_ids):
        assert a.state is State.ONLINE, a  # not RECONNECTING, not ERROR: it waits
    assert fl.is_down("gw-2")
    heartbeats = {a.app_id: a.last_heartbeat_at or 0 for a in store.get_many(other_ids)}
    assert all(heartbeats[a] > hb_before[a] for a in other_ids), "others' heartbeats stopped"
    per_account_minute = during / len(down_ids) / (held_s / 60)
    print(
        f"calls to gw-2 while down: {during} in {held_s:.0f}s "
        f"({per_account_minute:.1f} per account per minute; probe every "
        f"{settings.gateway_probe_interval_s:g}s)"
    )
    assert during <= held_s / settings.gateway_probe_interval_s + 1
    assert parked.state in ("PENDING", "WAITING")  # parked, not failed

    gws.admin(2, "faults", {"outage": False})
    t_back = time.time()

    def back() -> bool:
        got = list(store.get_many(down_ids))
        return not fl.is_down("gw-2") and all(
            a.state is State.ONLINE and (a.last_heartbeat_at or 0) >= t_back for a in got
        )

    wait_until(back, 6 * HEARTBEAT_S, 0.1, "gw-2's accounts ONLINE again")
    took = time.time() - t_back
    print(f"gw-2's accounts ONLINE and probed {took:.1f}s after it returned")
    assert took <= 2 * HEARTBEAT_S + 2.0  # + 2 s: a busy shared machine
    assert parked.get(timeout=30)["status"] == "sent"
    alerts = [
        (e["alert"], e.get("gateway"))
        for e in read_events(r, settings, count=200)
        if e.get("kind") == "alert"
    ]
    assert alerts == [("gatewayDown", "gw-2"), ("gatewayUp", "gw-2")]
    states = {a.app_id: a.state for a in store.get_many(other_ids + down_ids)}
    assert set(states.values()) == {State.ONLINE}
