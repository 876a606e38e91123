"""Pacing for bulk sends: ``pacing.gate()`` with an injected clock, then the dispatcher
on a real Redis with an explicit clock (quiet hours, daily cap, spacing); replies ignore
all of it."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from tests.test_outbox import Rig
from wxtasks.config import Settings
from wxtasks.errors import BadInputError
from wxtasks.send import pacing
from wxtasks.send.pacing import Span, gate
from wxtasks.send.policy import Lane

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    """Unix seconds of a local time, ``"2030-03-01 06:59:00"``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def policy(**overrides: Any) -> pacing.Policy:
    return pacing.policy_from(Settings.from_env({}, **overrides))


# -- the gate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "open_at"),
    [
        ("2030-03-01 00:00:00", "2030-03-01 07:00:00"),
        ("2030-03-01 03:30:00", "2030-03-01 07:00:00"),
        ("2030-03-01 06:59:59", "2030-03-01 07:00:00"),
        ("2030-03-01 07:00:00", None),
        ("2030-03-01 12:00:00", None),
        ("2030-03-01 23:59:59", None),
    ],
)
def test_quiet_hours_close_the_bulk_lane_until_the_window_ends(now: str, open_at: str) -> None:
    g = gate({}, 0, at(now), policy(quiet_hours="00:00-07:00"))
    if open_at is None:
        assert g.open_at == 0 and g.reason == ""
    else:
        assert g.open_at == at(open_at) and g.reason == "quiet hours"


@pytest.mark.parametrize(
    ("now", "open_at"),
    [
        ("2030-03-01 21:59:59", None),
        ("2030-03-01 22:00:00", "2030-03-02 06:00:00"),
        ("2030-03-01 23:30:00", "2030-03-02 06:00:00"),
        ("2030-03-02 00:00:00", "2030-03-02 06:00:00"),
        ("2030-03-02 05:59:00", "2030-03-02 06:00:00"),
        ("2030-03-02 06:00:00", None),
    ],
)
def test_quiet_hours_may_wrap_midnight(now: str, open_at: str | None) -> None:
    g = gate({}, 0, at(now), policy(quiet_hours="22:00-06:00"))
    assert g.open_at == (at(open_at) if open_at else 0)


def test_empty_quiet_hours_are_none_and_an_account_may_turn_them_off() -> None:
    night = at("2030-03-01 03:00:00")
    assert gate({}, 0, night, policy(quiet_hours="")).open_at == 0
    # the fleet has quiet hours; this account has none, another has its own
    assert gate({"quiet_hours": ""}, 0, night, policy()).open_at == 0
    own = gate({"quiet_hours": "02:00-04:30"}, 0, night, policy(quiet_hours=""))
    assert own.open_at == at("2030-03-01 04:30:00")


def test_quiet_hours_are_in_the_time_zone_from_settings() -> None:
    # 03:00 in Shanghai is 14:00 the day before in New York
    night_in_shanghai = at("2030-03-01 03:00:00")
    assert gate({}, 0, night_in_shanghai, policy(timezone="Asia/Shanghai")).reason == "quiet hours"
    assert gate({}, 0, night_in_shanghai, policy(timezone="America/New_York")).open_at == 0
    ny = ZoneInfo("America/New_York")
    g = gate({}, 0, at("2030-03-01 01:00:00", ny), policy(timezone="America/New_York"))
    assert g.open_at == at("2030-03-01 07:00:00", ny)


def test_warm_up_after_a_new_device_login() -> None:
    login = at("2030-03-01 10:00:00")
    p = policy(quiet_hours="", warmup_s=4 * 3600)
    fields = {"first_login_at": f"{login:.3f}"}
    g = gate(fields, 0, login + 3600, p)
    assert g.open_at == login + 4 * 3600 and "warm-up" in g.reason
    assert gate(fields, 0, login + 4 * 3600, p).open_at == 0
    assert gate({}, 0, login + 60, p).open_at == 0  # no login on record: no warm-up
    # per account: a longer one, or none
    assert gate({**fields, "warmup_s": "86400"}, 0, login + 5 * 3600, p).open_at == login + 86400
    assert gate({**fields, "warmup_s": "0"}, 0, login + 60, p).open_at == 0


def test_the_daily_cap_counts_down_and_reopens_at_local_midnight() -> None:
    p = policy(quiet_hours="", daily_bulk_cap=100)
    noon = at("2030-03-01 12:00:00")
    assert gate({}, 0, noon, p).sends_left_today == 100
    assert gate({}, 99, noon, p) == pacing.Gate(0.0, 1, "", p.bulk_jitter, p.group_jitter)
    full = gate({}, 100, noon, p)
    assert full.sends_left_today == 0 and full.open_at == at("2030-03-02 00:00:00")
    assert "daily bulk cap of 100" in full.reason
    assert gate({}, 5000, noon, policy(quiet_hours="")).sends_left_today == -1  # no cap
    # per account
    assert gate({"daily_bulk_cap": "10"}, 10, noon, p).open_at == at("2030-03-02 00:00:00")
    assert gate({"daily_bulk_cap": "1000"}, 100, noon, p).sends_left_today == 900


def test_local_day_is_the_days_key_in_the_fleets_zone() -> None:
    # 23:30 in Shanghai is already the next day there, but not in UTC
    t = at("2030-03-01 23:30:00")
    assert pacing.local_day(t, SHANGHAI) == "20300301"
    assert pacing.local_day(at("2030-03-02 00:30:00"), SHANGHAI) == "20300302"
    assert pacing.local_day(t, ZoneInfo("UTC")) == "20300301"
    assert pacing.local_day(at("2030-03-02 07:30:00"), ZoneInfo("UTC")) == "20300301"


def test_cool_off_closes_the_lane_until_it_ends() -> None:
    noon = at("2030-03-01 12:00:00")
    fields = {"bulk_cooloff_until": f"{noon + 1800:.3f}"}
    g = gate(fields, 0, noon, policy(quiet_hours=""))
    assert g.open_at == noon + 1800 and "cool-off" in g.reason
    assert gate(fields, 0, noon + 1800, policy(quiet_hours="")).open_at == 0


def test_the_latest_closed_gate_wins() -> None:
    # 23:00: the cap is reached (reopens 00:00), quiet hours 23:00-07:00, cool-off to 01:00
    now = at("2030-03-01 23:00:00")
    fields = {"bulk_cooloff_until": f"{at('2030-03-02 01:00:00'):.3f}"}
    g = gate(fields, 50, now, policy(quiet_hours="23:00-07:00", daily_bulk_cap=50))
    assert g.open_at == at("2030-03-02 07:00:00") and g.reason == "quiet hours"
    fields = {"bulk_cooloff_until": f"{at('2030-03-02 09:00:00'):.3f}"}
    g = gate(fields, 50, now, policy(quiet_hours="23:00-07:00", daily_bulk_cap=50))
    assert g.open_at == at("2030-03-02 09:00:00") and "cool-off" in g.reason


def test_an_account_may_set_its_own_spacing_and_a_bad_one_is_refused() -> None:
    noon = at("2030-03-01 12:00:00")
    p = policy(bulk_jitter_s="1-3", group_jitter_s="2-5")
    g = gate({"bulk_jitter": "5-8", "group_jitter": "10-20"}, 0, noon, p)
    assert (g.bulk_jitter, g.group_jitter) == (Span(5, 8), Span(10, 20))
    assert gate({}, 0, noon, p).bulk_jitter == Span(1, 3)
    for bad in ({"bulk_jitter": "3-1"}, {"group_jitter": "fast"}, {"quiet_hours": "late"}):
        with pytest.raises(BadInputError):
            gate(bad, 0, noon, p)


# -- the dispatcher ---------------------------------------------------------------------------


def paced_rig(redis_url: str, r: redis.Redis, **overrides: Any) -> Rig:
    values: dict[str, Any] = {
        "rate_per_second": 1000,
        "burst": 1000,
        "account_rate_per_second": 1000,
        "account_burst": 1000,
        "timezone": "Asia/Shanghai",
        **overrides,
    }
    return Rig(redis_url, r, **values)


def test_no_bulk_dispatch_inside_quiet_hours_and_it_resumes_after(
    redis_url: str, r: redis.Redis
) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="00:00-07:00")
    rig.online("shop")
    rig.t = at("2030-03-01 06:58:00")
    rig.park_many(((f"b{i}", "shop") for i in range(3)), lane="bulk")
    rig.park("reply", "shop")
    # replies go at night; bulk waits, and the account says why
    assert rig.ids(at("2030-03-01 06:59:00")) == ["reply"]
    rig.done()
    assert r.hget(rig.keys.account("shop"), "bulk_wait") == "quiet hours"
    assert rig.tick(at("2030-03-01 06:59:59")) == []
    assert rig.ids(at("2030-03-01 07:00:00")) == ["b0", "b1", "b2"]
    assert r.hget(rig.keys.account("shop"), "bulk_wait") == ""


def test_the_daily_cap_stops_bulk_until_local_midnight(redis_url: str, r: redis.Redis) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="", daily_bulk_cap=2)
    rig.online("shop")
    rig.t = at("2030-03-01 21:00:00")
    rig.park_many(((f"b{i}", "shop") for i in range(5)), lane="bulk")
    day1 = rig.ids(at("2030-03-01 22:00:00"))
    for t in ("2030-03-01 22:10:00", "2030-03-01 23:59:59"):
        rig.done()
        day1 += rig.ids(at(t))
    assert day1 == ["b0", "b1"]
    assert "daily bulk cap" in r.hget(rig.keys.account("shop"), "bulk_wait")
    rig.park("reply", "shop")  # replies are not counted nor capped
    assert rig.ids(at("2030-03-01 23:59:59")) == ["reply"]
    rig.done()
    assert rig.ids(at("2030-03-02 00:00:00")) == ["b2", "b3"]


def test_bulk_sends_are_spaced_by_the_configured_jitter(redis_url: str, r: redis.Redis) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="", bulk_jitter_s="2-4", group_jitter_s="5-7")
    rig.online("priv", "grp", "camp")
    pipe = r.pipeline(transaction=False)
    for i in range(8):
        rig.park(f"p{i}", "priv", "bulk", rig.t - 10 + i, pipe)
        rig.park(f"g{i}", "grp", "bulk", rig.t - 10 + i, pipe, to_wxid=f"{i}@chatroom")
        rig.park(f"c{i}", "camp", "bulk", rig.t - 10 + i, pipe, jitter="0.5-0.8")
    pipe.execute()
    start, step = rig.t, 0.05
    sent: dict[str, list[float]] = {"priv": [], "grp": [], "camp": []}
    for k in range(int(60 / step)):
        for w in rig.tick(start + k * step):
            sent[w.app_id].append(k * step)
    for app, (low, high) in {"priv": (2, 4), "grp": (5, 7), "camp": (0.5, 0.8)}.items():
        times = sent[app]
        assert len(times) == 8, (app, times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(low - 1e-6 <= g <= high + step + 1e-6 for g in gaps), (app, gaps)
        assert len({round(g, 2) for g in gaps}) > 1, (app, gaps)  # jittered, not fixed


def test_an_accounts_own_pacing_overrides_the_fleets(redis_url: str, r: redis.Redis) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="00:00-07:00", bulk_jitter_s="2-4")
    rig.online("shop", "night-owl", "steady")
    rig.store.update("shop", pacing={"bulk_jitter": "0-0"})
    rig.store.update("night-owl", pacing={"bulk_jitter": "0-0", "quiet_hours": ""})
    rig.t = at("2030-03-01 12:00:00")
    rig.park_many(((f"shop{i}", "shop") for i in range(5)), lane="bulk")
    rig.park_many(((f"steady{i}", "steady") for i in range(3)), lane="bulk")
    got = rig.ids()
    assert [i for i in got if i.startswith("shop")] == [f"shop{i}" for i in range(5)]
    assert [i for i in got if i.startswith("steady")] == ["steady0"]  # the fleet's 2-4 s
    rig.done()
    # at 03:00 only the account without quiet hours sends bulk
    rig.t = at("2030-03-02 03:00:00")
    rig.park_many(((f"late{i}", "shop") for i in range(2)), lane="bulk")
    rig.park_many(((f"owl{i}", "night-owl") for i in range(3)), lane="bulk")
    assert rig.ids() == ["owl0", "owl1", "owl2"]


def test_replies_ignore_every_pacing_gate(redis_url: str, r: redis.Redis) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="00:00-07:00", daily_bulk_cap=1, bulk_jitter_s="5-10")
    rig.online("shop")
    night = rig.t = at("2030-03-01 03:00:00")
    r.hset(
        rig.keys.account("shop"),
        mapping={
            "first_login_at": f"{night - 60:.3f}",
            "bulk_cooloff_until": f"{night + 3600:.3f}",
        },
    )
    r.set(rig.keys.bulk_day("shop", "20300301"), 1)  # today's cap is used up
    rig.park_many(((f"b{i}", "shop") for i in range(3)), lane="bulk")
    rig.park_many((f"r{i}", "shop") for i in range(5))
    assert rig.ids(night) == [f"r{i}" for i in range(5)]  # all at once, no spacing
    rig.done()
    assert rig.tick(night + 60) == []
    assert rig.outbox.backlog(["shop"])["shop"] == {Lane.INTERACTIVE.value: 0, "bulk": 3}
