"""Sharded dispatch end to end (issue: dispatch, "done when"): two real dispatcher
processes split the 64 shards; one SIGKILLed mid-campaign is taken over within
LEASE_S + CYCLE_S, one SIGSTOPped past its lease dispatches nothing from the shards it lost
and rejoins, the shards' borrowed quotas hold the global and a gateway's envelope, an idle
shard holds no tokens, and a campaign over many shards pauses and cancels within 1 s.

One stack for the module (a worker, a beat, two dispatchers against the v1 simulator),
every setting at its default but the rates and bulk pacing (spacing 0-0, no quiet hours,
no warm-up: the bulk lane is paced by the buckets only). Run with ``-s`` to see the
measured figures.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import (
    ARRIVAL_JITTER_S,
    QUIET_HOURS_OFF,
    Simulator,
    Stack,
    _flush,
    db,
    online,
    over_envelope,
    settings_for,
)
from wxtasks.accounts.machine import Event
from wxtasks.campaigns.store import Content
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Child, Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.metrics import max_in_window
from wxtasks.runtime import Runtime
from wxtasks.send.dispatcher import REFILL_S
from wxtasks.send.leases import CYCLE_S, LEASE_S, dispatchers_view

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

RATE, BURST = 20, 5  # the fleet's bucket: every test here is paced by it
#: what over_envelope allows past T: a quota's refill period and the arrival jitter
SLACK_S = REFILL_S + ARRIVAL_JITTER_S
SLOW_GW, GW_RATE, GW_BURST = "slowgw", 4.0, 2  # a gateway with a tighter limit of its own
#: the design bound of a takeover: the dead one's leases run out, the next cycle takes them
TAKEOVER_DESIGN_S = LEASE_S + CYCLE_S
#: the promise: a dead dispatcher's shards dispatch again (a message at the gateway) within
TAKEOVER_S = 5.0
#: pause and cancel stop new dispatches within this (the campaigns' promise)
STOP_S = 1.0
#: how long a paused or cancelled campaign is watched past STOP_S: running, it sends
#: RATE a second, so this window would hold ~30
WATCH_S = 1.5
#: bulk sends paced by the buckets alone: no spacing, quiet hours or warm-up
BUCKET_PACED_BULK: dict[str, Any] = {
    "bulk_jitter_s": "0-0",
    "group_jitter_s": "0-0",
    "quiet_hours": QUIET_HOURS_OFF,
    "warmup_s": 0,
}


@pytest.fixture(scope="module")
def stack(redis_server: str, v1_simulator: Simulator, supervisor: Supervisor) -> Iterator[Stack]:
    """The module's stack, on the suite's first databases (flushed before and after)."""
    settings = settings_for(
        redis_server,
        v1_simulator,
        rate_per_second=RATE,
        burst=BURST,
        account_rate_per_second=50,  # far above each account's share of the fleet's
        account_burst=50,
        heartbeat_interval_s=3600,
        **BUCKET_PACED_BULK,
    )
    _flush(redis_server)
    _flush(db(redis_server, 1))
    runtime = Runtime(settings)
    runtime.gateways.add(  # the same simulator, behind a bucket of its own
        SLOW_GW,
        base_url=v1_simulator.url,
        profile=v1_simulator.profile,
        token_env="VIDEOS_API_TOKEN",
        rate=GW_RATE,
        burst=GW_BURST,
    )
    runtime.redis.close()
    stack = Stack(settings, supervisor).full("disp")
    yield stack
    stack.stop()
    _flush(redis_server)
    _flush(db(redis_server, 1))


@pytest.fixture
def sim(v1_simulator: Simulator) -> Simulator:
    return v1_simulator


def _dispatcher_children(stack: Stack) -> list[Child]:
    return [c for c in stack.children if c.name.startswith("dispatcher-") and c.alive]


@pytest.fixture
def rt(stack: Stack, sim: Simulator) -> Iterator[Runtime]:
    """The module's runtime, with two live dispatchers holding 32 shards each (a test that
    killed one gets a new one) and the simulator's sends reset."""
    runtime = Runtime(stack.settings)
    for _ in range(2 - len(_dispatcher_children(stack))):
        stack.dispatcher()
    wait_until(lambda: _balanced(runtime), 30, 0.1, "two dispatchers holding 32 shards each")
    sim.reset()
    yield runtime
    runtime.redis.close()


# -- helpers -----------------------------------------------------------------------------


def _balanced(rt: Runtime) -> bool:
    view = dispatchers_view(rt.redis, rt.keys)
    return (
        view["unheld_shards"] == 0
        and len(view["dispatchers"]) == 2
        and all(d["shards"] == rt.keys.shards // 2 for d in view["dispatchers"])
    )


def _sole_holder(rt: Runtime, me: str) -> bool:
    """``me`` is the only live dispatcher and holds every shard."""
    view = dispatchers_view(rt.redis, rt.keys)
    live = view["dispatchers"]
    return (
        view["unheld_shards"] == 0
        and [d["id"] for d in live] == [me]
        and live[0]["shards"] == rt.keys.shards
    )


def _id_of(rt: Runtime, child: Child) -> str:
    """The dispatcher id of ``child`` (its figures name its pid)."""

    def find() -> str | None:
        for d in dispatchers_view(rt.redis, rt.keys)["dispatchers"]:
            if rt.redis.hget(rt.keys.dispatcher(d["id"]), "pid") == str(child.process.pid):
                return str(d["id"])
        return None

    return str(wait_until(find, 10, 0.05, f"dispatcher pid {child.process.pid} to report"))


def _figures(rt: Runtime, me: str) -> dict[str, Any]:
    raw = rt.redis.hgetall(rt.keys.dispatcher(me))
    return {
        "shards": {int(s) for s in (raw.get("shards") or "").split(",") if s},
        "leases_at": raw.get("leases_at"),
        "dispatched": int(raw.get("dispatched") or 0),
        "fenced": int(raw.get("fenced") or 0),
    }


def _spread(keys: Keys, prefix: str, n: int) -> list[str]:
    """``n`` appIds in ``n`` different shards."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < n:
        out.setdefault(keys.shard(f"{prefix}{i}"), f"{prefix}{i}")
        i += 1
    return list(out.values())


def _in_shard(keys: Keys, prefix: str, shard: int, n: int) -> list[str]:
    """``n`` appIds that are all in ``shard``."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        if keys.shard(f"{prefix}{i}") == shard:
            out.append(f"{prefix}{i}")
        i += 1
    return out


def _create(rt: Runtime, campaign_id: str, targets: list[tuple[str, str]]) -> None:
    created = rt.campaigns.create(
        campaign_id, Content.parse("text", {"content": "双12 活动"}), targets
    )
    assert created["state"] == "running" and created["total"] == len(targets)


def _sends_to(sim: Simulator, prefix: str) -> list[dict[str, Any]]:
    return [s for s in sim.sends() if str(s["toWxid"]).startswith(prefix)]


def _done(rt: Runtime, campaign_id: str, timeout_s: float) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: (s := rt.campaigns.show(campaign_id))["state"] == "done" and s,
            timeout_s,
            0.2,
            f"campaign {campaign_id} to finish",
        )
    )


def _exactly_once(sim: Simulator, prefix: str, expected: set[tuple[str, str]]) -> None:
    at_gateway = Counter((s["appId"], s["toWxid"]) for s in _sends_to(sim, prefix))
    assert set(at_gateway) == expected, "a target is missing at the gateway"
    assert max(at_gateway.values()) == 1, "a target reached the gateway twice"


def _first_send_after(
    sim: Simulator, keys: Keys, shards: set[int], after: float, timeout_s: float
) -> float:
    """When the first send of an account in ``shards`` reached the gateway after ``after``."""
    return float(
        wait_until(
            lambda: min(
                (
                    s["at"]
                    for s in sim.sends()
                    if s["at"] > after and keys.shard(s["appId"]) in shards
                ),
                default=None,
            ),
            timeout_s,
            0.05,
            "a send of the lost shards at the gateway",
        )
    )


def _watch(seconds: float) -> None:
    """Let ``seconds`` of the run go by (an observation window, not a wait for a condition)."""
    end = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= end, seconds + 5, 0.05, "the observation window")


# -- the tests ---------------------------------------------------------------------------


def test_sigkill_one_of_two_dispatchers_mid_campaign(
    rt: Runtime, sim: Simulator, stack: Stack, supervisor: Supervisor
) -> None:
    accounts = _spread(rt.keys, "kill-", 20)
    online(rt.accounts, *accounts)
    total = 300  # 15 s at the fleet's 20/s
    targets = [(accounts[i % len(accounts)], f"k_{i:03d}") for i in range(total)]
    _create(rt, "kill9", targets)
    wait_until(lambda: len(_sends_to(sim, "k_")) >= 60, 30, 0.05, "the campaign under way")

    victim, survivor = _dispatcher_children(stack)
    victim_id, survivor_id = _id_of(rt, victim), _id_of(rt, survivor)
    lost = _figures(rt, victim_id)["shards"]
    assert len(lost) == rt.keys.shards // 2
    supervisor.kill(victim)  # SIGKILL: no goodbye, its leases run out
    killed_at = time.time()

    wait_until(lambda: _sole_holder(rt, survivor_id), 15, 0.02, "the survivor to hold all")
    held_all_s = time.time() - killed_at
    # a message of one of the killed one's shards is at the gateway, dispatched after the
    # survivor took the shards over
    again_at = _first_send_after(sim, rt.keys, lost, killed_at + held_all_s, 15)
    takeover_s = again_at - killed_at

    done = _done(rt, "kill9", 90)
    sends = _sends_to(sim, "k_")
    times = [s["at"] for s in sends]
    print(
        f"\n[sigkill] survivor held all 64 shards {held_all_s:.2f}s after the kill, a lost "
        f"shard's message at the gateway {takeover_s:.2f}s after (design {TAKEOVER_DESIGN_S}s, "
        f"promise {TAKEOVER_S}s); "
        f"campaign {done['sent']}/{total} sent, {len(sends)} sends at the gateway, max in 1 s "
        f"{max_in_window(times, 1)} (burst {BURST} + rate {RATE})"
    )
    assert takeover_s <= TAKEOVER_S
    assert done["sent"] == total and done["waiting"] == 0
    _exactly_once(sim, "k_", set(targets))
    assert over_envelope(times, BURST, RATE) == []


def test_sigstop_past_the_lease_dispatches_nothing_it_lost_then_rejoins(
    rt: Runtime, sim: Simulator, stack: Stack
) -> None:
    accounts = _spread(rt.keys, "stop-", 20)
    online(rt.accounts, *accounts)
    paused, other = _dispatcher_children(stack)
    paused_id, other_id = _id_of(rt, paused), _id_of(rt, other)

    # stopped right after a report of its figures, while nothing waits (the traffic starts
    # once it is stopped): what it had dispatched is all in that report, so any rise of
    # the figure before it holds leases again would be a dispatch from a lost shard
    assert rt.outbox.waiting() == []
    last = _figures(rt, paused_id)["leases_at"]
    wait_until(lambda: _figures(rt, paused_id)["leases_at"] != last, 5, 0.002, "a report")
    os.kill(paused.process.pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        before = _figures(rt, paused_id)
        lost = before["shards"]
        assert len(lost) == rt.keys.shards // 2
        # traffic while it is stopped: the campaign's messages park and go out steadily,
        # half of its accounts in the stopped one's shards
        total = 200  # 10 s at 20/s
        targets = [(accounts[i % len(accounts)], f"s_{i:03d}") for i in range(total)]
        _create(rt, "sigstop", targets)
        wait_until(lambda: _sole_holder(rt, other_id), 15, 0.02, "the other to hold all")
        held_all_s = time.time() - stopped_at
        again_at = _first_send_after(sim, rt.keys, lost, stopped_at + held_all_s, 15)
        assert len(_sends_to(sim, "s_")) < total, "traffic must still flow at SIGCONT"
    finally:
        os.kill(paused.process.pid, signal.SIGCONT)
    resumed_at = time.time()

    first = wait_until(
        lambda: (f := _figures(rt, paused_id))["leases_at"] != before["leases_at"] and f,
        10,
        0.005,
        "the resumed dispatcher's first report",
    )
    wait_until(
        lambda: len(_figures(rt, paused_id)["shards"]) == rt.keys.shards // 2,
        5,
        0.05,
        "the resumed dispatcher to hold half the shards again",
    )
    rejoin_s = time.time() - resumed_at
    done = _done(rt, "sigstop", 60)
    print(
        f"\n[sigstop] the other held all 64 shards {held_all_s:.2f}s after SIGSTOP, a lost "
        f"shard's message at the gateway {again_at - stopped_at:.2f}s after; after SIGCONT "
        f"its first report: {len(first['shards'])} shards, dispatched "
        f"{before['dispatched']} -> {first['dispatched']}, fenced calls {before['fenced']} -> "
        f"{first['fenced']}; back to 32 shards {rejoin_s:.2f}s after SIGCONT; campaign "
        f"{done['sent']}/{total} sent"
    )
    # nothing dispatched between SIGCONT and its first report (written right after its
    # first lease cycle, before any dispatch call on a new lease): any call it made with
    # the tokens of its lost leases was fenced
    assert first["dispatched"] == before["dispatched"]
    assert done["sent"] == total and done["waiting"] == 0
    _exactly_once(sim, "s_", set(targets))


def _quota_sampler(rt: Runtime, seen: set[int]) -> Any:
    """A poll step that adds to ``seen`` the shards holding a quota of the fleet's bucket
    now (a borrowed quota lives one refill period, REFILL_S)."""
    keys = rt.keys

    def sample() -> None:
        pipe = rt.redis.pipeline(transaction=False)
        for shard in range(keys.shards):
            pipe.exists(keys.quota(shard, "global"))
        seen.update(s for s, held in enumerate(pipe.execute()) if held)

    return sample


def test_quotas_hold_the_fleets_and_a_gateways_envelope_across_shards(
    rt: Runtime, sim: Simulator, stack: Stack
) -> None:
    keys = rt.keys
    everywhere = _spread(keys, "env-", keys.shards)  # an account in every shard
    online(rt.accounts, *everywhere)
    slow = _spread(keys, "gwacct-", 6)
    for app_id in slow:
        rt.accounts.register(app_id, gateway=SLOW_GW)
        rt.accounts.transition(app_id, Event.LOGIN_SUCCEEDED)

    # campaigns' targets wait in the outbox of every shard (dispatched on borrowed quotas),
    # while replies sent at the same time admit on the buckets themselves in the workers
    fleet_targets = [(everywhere[i % len(everywhere)], f"e_{i:03d}") for i in range(128)]
    gw_targets = [(slow[i % len(slow)], f"g_{i:03d}") for i in range(24)]  # 6 s at 4/s
    _create(rt, "envelope", fleet_targets)
    _create(rt, "envelope-gw", gw_targets)
    client = WxTasksClient.from_settings(stack.settings)
    quota_holders: set[int] = set()
    sample = _quota_sampler(rt, quota_holders)
    try:
        results = [
            client.send_text(everywhere[(7 * i) % len(everywhere)], f"r_{i:03d}", f"m{i}")
            for i in range(40)
        ]
        total = len(fleet_targets) + len(gw_targets) + len(results)
        wait_until(
            lambda: sample() or len(sim.sends()) >= total, 60, 0.05, "every send at the gateway"
        )
        outcomes = Counter(res.get(timeout=30)["status"] for res in results)
    finally:
        client.app.close()
    assert outcomes == {"sent": len(results)}
    assert _done(rt, "envelope", 10)["sent"] == len(fleet_targets)
    assert _done(rt, "envelope-gw", 10)["sent"] == len(gw_targets)
    sends = sim.sends()
    at_gateway = Counter((s["appId"], s["toWxid"]) for s in sends)
    assert len(at_gateway) == total and max(at_gateway.values()) == 1
    times = [s["at"] for s in sends]
    gw_times = [s["at"] for s in sends if s["appId"] in slow]
    widths = (0.25, 0.5, 1, 2, 5)
    seen = {w: (max_in_window(times, w), max_in_window(gw_times, w)) for w in widths}
    print(
        f"\n[envelope] {total} sends in {max(times) - min(times):.2f}s (the slow gateway's "
        f"from {min(gw_times) - min(times):.2f}s to {max(gw_times) - min(times):.2f}s), "
        f"{len(quota_holders)} shards seen holding a quota; max sends in a window T (fleet | "
        "slow gateway) vs allowed burst + rate*(T + jitter + refill) + 1: "
        + ", ".join(
            f"T={w}: {f} <= {BURST + RATE * (w + SLACK_S) + 1:.1f} | "
            f"{g} <= {GW_BURST + GW_RATE * (w + SLACK_S) + 1:.1f}"
            for w, (f, g) in seen.items()
        )
    )
    # the shards' quotas did the pacing (sampled: a quota lives 0.1 s, so not all are seen)
    assert len(quota_holders) >= 8
    assert over_envelope(times, BURST, RATE, widths) == []
    assert over_envelope(gw_times, GW_BURST, GW_RATE, widths) == []


def test_the_quota_follows_demand_to_the_one_busy_shard(rt: Runtime, sim: Simulator) -> None:
    keys = rt.keys
    busy_shard = 7
    busy = _in_shard(keys, "busy-", busy_shard, 4)
    idle = _spread(keys, "idle-", keys.shards)  # every shard has an account, all quiet
    online(rt.accounts, *busy, *idle)
    total = 140  # 7 s at the fleet's 20/s, each account's own 50/s far above it
    quota_holders: set[int] = set()
    sample = _quota_sampler(rt, quota_holders)

    def none_held() -> bool:
        quota_holders.clear()
        sample()
        return not quota_holders

    # what earlier tests of this stack borrowed has lapsed (one refill period): a clean start
    wait_until(none_held, 5, 0.05, "no shard holding a quota")
    _create(rt, "busy", [(busy[i % len(busy)], f"b_{i:03d}") for i in range(total)])
    wait_until(
        lambda: sample() or len(sim.sends()) >= total, 60, 0.05, "every target at the gateway"
    )
    times = sorted(s["at"] for s in sim.sends())
    start, end = times[0] + 1.0, times[-1] - 0.5  # the steady part: past the burst
    steady = sum(1 for t in times if start <= t <= end) / (end - start)
    print(
        f"\n[busy shard] {total} sends from shard {busy_shard} in "
        f"{times[-1] - times[0]:.2f}s; steady {steady:.1f}/s = {steady / RATE:.0%} of the "
        f"fleet's {RATE}/s; shards seen holding a global quota: {sorted(quota_holders)}"
    )
    assert _done(rt, "busy", 10)["sent"] == total
    assert steady >= 0.8 * RATE
    assert quota_holders == {busy_shard}  # the idle shards never held a token


def test_pause_and_cancel_stop_a_campaign_across_shards_within_a_second(
    rt: Runtime, sim: Simulator
) -> None:
    accounts = _spread(rt.keys, "halt-", 20)
    online(rt.accounts, *accounts)
    total = 160
    targets = [(accounts[i % len(accounts)], f"h_{i:03d}") for i in range(total)]
    _create(rt, "halt", targets)
    wait_until(lambda: len(_sends_to(sim, "h_")) >= 40, 30, 0.05, "the campaign under way")
    assert rt.campaigns.pause("halt")["state"] == "paused"
    paused_at = time.time()
    _watch(STOP_S + WATCH_S)
    sends = _sends_to(sim, "h_")
    last_after_pause = max(s["at"] for s in sends) - paused_at
    late = [s for s in sends if s["at"] > paused_at + STOP_S]
    assert rt.campaigns.show("halt")["waiting"] > 0
    rt.campaigns.resume("halt")
    done = _done(rt, "halt", 60)
    assert late == [], f"{len(late)} sends more than {STOP_S}s after pause"
    assert done["sent"] == total
    _exactly_once(sim, "h_", set(targets))

    cancel_total = 100
    _create(rt, "halt2", [(accounts[i % len(accounts)], f"c_{i:03d}") for i in range(100)])
    wait_until(lambda: len(_sends_to(sim, "c_")) >= 25, 30, 0.05, "the campaign under way")
    rt.campaigns.cancel("halt2")
    cancelled_at = time.time()
    _watch(STOP_S + WATCH_S)
    sends = _sends_to(sim, "c_")
    last_after_cancel = max(s["at"] for s in sends) - cancelled_at
    late = [s for s in sends if s["at"] > cancelled_at + STOP_S]
    final = wait_until(
        lambda: (s := rt.campaigns.show("halt2"))["waiting"] == 0 and s, 30, 0.2, "all ended"
    )
    print(
        f"\n[pause/cancel] last send {last_after_pause:+.3f}s after pause() returned, "
        f"{last_after_cancel:+.3f}s after cancel() (bound {STOP_S}s); cancelled "
        f"{final['cancelled']}, sent {final['sent']}"
    )
    assert late == [], f"{len(late)} sends more than {STOP_S}s after cancel"
    assert final["state"] == "cancelled"
    assert final["sent"] == len(sends) and final["cancelled"] == cancel_total - len(sends)
