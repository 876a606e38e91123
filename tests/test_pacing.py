"""Pacing for bulk sends: the gates of ``lua/lib/gates.lua`` on a real Redis with an
explicit clock — first through admission (a bulk send that comes straight to a worker),
then through the dispatcher (quiet hours, daily cap, spacing); replies ignore all of it."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from tests.conftest import build
from tests.test_outbox import Rig
from wxtasks import mirrors
from wxtasks.accounts.machine import Event
from wxtasks.config import Settings
from wxtasks.send import pacing
from wxtasks.send.gates import Answer, Lane
from wxtasks.send.pipeline import Message

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, tz: ZoneInfo = SHANGHAI) -> float:
    """Unix seconds of a local time, ``"2030-03-01 06:59:00"``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


class Gate:
    """A bulk send straight to admission at an explicit time, from a fresh ONLINE account
    with the given hash fields and bulk sends today: what the gates answer, and when the
    closed one opens (unix seconds; 0 when it was let through)."""

    def __init__(self, redis_url: str, r: redis.Redis) -> None:
        self.redis_url, self.r, self.n = redis_url, r, 0

    def __call__(
        self, fields: dict[str, str], sent_today: int, now: float, **policy: Any
    ) -> tuple[Answer, float]:
        settings = Settings.from_env(
            {},
            redis_url=self.redis_url,
            rate_per_second=1000,
            burst=1000,
            account_rate_per_second=1000,
            account_burst=1000,
            **policy,
        )
        rt = build(self.r, settings)
        self.n += 1
        app = f"acct{self.n}"
        rt.accounts.register(app)
        rt.accounts.transition(app, Event.LOGIN_SUCCEEDED)
        self.r.hdel(rt.keys.account(app), "first_login_at")  # no login on record unless given
        if fields:
            self.r.hset(rt.keys.account(app), mapping=fields)
        if sent_today:
            self.r.set(rt.keys.bulk_day(app, rt.pacing.day(now)), sent_today)
        self.r.delete(rt.keys.global_bucket)  # each call its own moment: the clock may go back
        message = Message.parse("text", {"app_id": app, "to_wxid": "wxid_1", "content": "x"})
        ticket = rt.pipeline.ticket(f"t{self.n}", Lane.BULK, now)
        a = rt.pipeline.admit(message, ticket, now_ms=now * 1000)
        return a.answer, (0.0 if a.answer is Answer.ADMITTED else now + a.wait_s)


@pytest.fixture
def gate(redis_url: str, r: redis.Redis) -> Gate:
    return Gate(redis_url, r)


# -- the gates ----------------------------------------------------------------------------------


def test_python_knows_exactly_the_gates_answers() -> None:
    lib = (resources.files("wxtasks") / "lua" / "lib" / "gates.lua").read_text("utf-8")
    table = lib[lib.index("local ANSWERS = {") : lib.index("}")]
    assert re.findall(r"'(\w+)',", table) == [a.value for a in Answer]


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
def test_quiet_hours_close_the_bulk_lane_until_the_window_ends(
    gate: Gate, now: str, open_at: str
) -> None:
    answer, opens = gate({}, 0, at(now), quiet_hours="00:00-07:00")
    if open_at is None:
        assert answer is Answer.ADMITTED
    else:
        assert (answer, opens) == (Answer.QUIET_HOURS, at(open_at))


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
def test_quiet_hours_may_wrap_midnight(gate: Gate, now: str, open_at: str | None) -> None:
    _, opens = gate({}, 0, at(now), quiet_hours="22:00-06:00")
    assert opens == (at(open_at) if open_at else 0)


def test_empty_quiet_hours_are_none_and_an_account_may_turn_them_off(gate: Gate) -> None:
    night = at("2030-03-01 03:00:00")
    assert gate({}, 0, night, quiet_hours="") == (Answer.ADMITTED, 0)
    # the fleet has quiet hours; this account has none, another has its own
    assert gate({"quiet_hours": ""}, 0, night) == (Answer.ADMITTED, 0)
    own = gate({"quiet_hours": "02:00-04:30"}, 0, night, quiet_hours="")
    assert own == (Answer.QUIET_HOURS, at("2030-03-01 04:30:00"))


def test_quiet_hours_are_in_the_time_zone_from_settings(gate: Gate) -> None:
    # 03:00 in Shanghai is 14:00 the day before in New York
    night_in_shanghai = at("2030-03-01 03:00:00")
    assert gate({}, 0, night_in_shanghai, timezone="Asia/Shanghai")[0] is Answer.QUIET_HOURS
    assert gate({}, 0, night_in_shanghai, timezone="America/New_York")[0] is Answer.ADMITTED
    ny = ZoneInfo("America/New_York")
    opens = gate({}, 0, at("2030-03-01 01:00:00", ny), timezone="America/New_York")[1]
    assert opens == at("2030-03-01 07:00:00", ny)


def test_warm_up_after_a_new_device_login(gate: Gate) -> None:
    login = at("2030-03-01 10:00:00")
    p: dict[str, Any] = {"quiet_hours": "", "warmup_s": 4 * 3600}
    fields = {"first_login_at": f"{login:.3f}"}
    assert gate(fields, 0, login + 3600, **p) == (Answer.WARMUP, login + 4 * 3600)
    assert gate(fields, 0, login + 4 * 3600, **p)[0] is Answer.ADMITTED
    assert gate({}, 0, login + 60, **p)[0] is Answer.ADMITTED  # no login on record: no warm-up
    # per account: a longer one, or none
    longer = gate({**fields, "warmup_s": "86400"}, 0, login + 5 * 3600, **p)
    assert longer == (Answer.WARMUP, login + 86400)
    assert gate({**fields, "warmup_s": "0"}, 0, login + 60, **p)[0] is Answer.ADMITTED


def test_the_daily_cap_counts_and_reopens_at_local_midnight(gate: Gate) -> None:
    p: dict[str, Any] = {"quiet_hours": "", "daily_bulk_cap": 100}
    noon = at("2030-03-01 12:00:00")
    assert gate({}, 99, noon, **p)[0] is Answer.ADMITTED
    assert gate({}, 100, noon, **p) == (Answer.DAILY_CAP, at("2030-03-02 00:00:00"))
    assert gate({}, 5000, noon, quiet_hours="")[0] is Answer.ADMITTED  # no cap
    # per account
    assert gate({"daily_bulk_cap": "10"}, 10, noon, **p) == (
        Answer.DAILY_CAP,
        at("2030-03-02 00:00:00"),
    )
    assert gate({"daily_bulk_cap": "1000"}, 100, noon, **p)[0] is Answer.ADMITTED


def test_local_day_is_the_days_key_in_the_fleets_zone() -> None:
    # 23:30 in Shanghai is already the next day there, but not in UTC
    t = at("2030-03-01 23:30:00")
    assert pacing.local_day(t, SHANGHAI) == "20300301"
    assert pacing.local_day(at("2030-03-02 00:30:00"), SHANGHAI) == "20300302"
    assert pacing.local_day(t, ZoneInfo("UTC")) == "20300301"
    assert pacing.local_day(at("2030-03-02 07:30:00"), ZoneInfo("UTC")) == "20300301"


def test_cool_off_closes_the_lane_until_it_ends(gate: Gate) -> None:
    noon = at("2030-03-01 12:00:00")
    fields = {"bulk_cooloff_until": f"{noon + 1800:.3f}"}
    assert gate(fields, 0, noon, quiet_hours="") == (Answer.COOLOFF, noon + 1800)
    assert gate(fields, 0, noon + 1800, quiet_hours="")[0] is Answer.ADMITTED


def test_the_latest_closed_gate_wins(gate: Gate) -> None:
    # 23:00: the cap is reached (reopens 00:00), quiet hours 23:00-07:00, cool-off to 01:00
    now = at("2030-03-01 23:00:00")
    p: dict[str, Any] = {"quiet_hours": "23:00-07:00", "daily_bulk_cap": 50}
    fields = {"bulk_cooloff_until": f"{at('2030-03-02 01:00:00'):.3f}"}
    assert gate(fields, 50, now, **p) == (Answer.QUIET_HOURS, at("2030-03-02 07:00:00"))
    fields = {"bulk_cooloff_until": f"{at('2030-03-02 09:00:00'):.3f}"}
    assert gate(fields, 50, now, **p) == (Answer.COOLOFF, at("2030-03-02 09:00:00"))


def test_a_bulk_send_admitted_at_once_spaces_the_next_by_the_accounts_jitter(
    redis_url: str, r: redis.Redis
) -> None:
    """A bulk send that comes straight to a worker passes the same spacing as one the
    dispatcher hands out: the next one waits the account's (or the fleet's) gap."""
    settings = Settings.from_env(
        {},
        redis_url=redis_url,
        rate_per_second=1000,
        burst=1000,
        quiet_hours="",
        bulk_jitter_s="1-3",
        group_jitter_s="2-5",
    )
    rt = build(r, settings)
    noon = at("2030-03-01 12:00:00")
    gaps: dict[str, list[float]] = {}
    for app, fields, to in (
        ("fleet", {}, "wxid_a"),
        ("own", {"bulk_jitter": "5-8"}, "wxid_a"),
        ("group", {}, "123@chatroom"),
        ("text-at", {}, "wxid_a"),
    ):
        rt.accounts.register(app, rate=1000, burst=1000)
        rt.accounts.transition(app, Event.LOGIN_SUCCEEDED)
        if fields:
            r.hset(rt.keys.account(app), mapping=fields)
        r.delete(rt.keys.global_bucket)  # each account starts its own clock at noon
        for i in range(6):
            t = noon + 100 * i
            content = f"m{i} to 99@chatroom" if app == "text-at" else f"m{i}"
            m = Message.parse("text", {"app_id": app, "to_wxid": to, "content": content})
            first = rt.pipeline.admit(
                m, rt.pipeline.ticket(f"{app}{i}", Lane.BULK, t), now_ms=t * 1000
            )
            assert first.answer is Answer.ADMITTED
            m2 = Message.parse("text", {"app_id": app, "to_wxid": to, "content": f"{i}b"})
            second = rt.pipeline.admit(
                m2, rt.pipeline.ticket(f"{app}{i}b", Lane.BULK, t), now_ms=t * 1000
            )
            assert second.answer is Answer.SPACING
            gaps.setdefault(app, []).append(second.wait_s)
    assert all(1 <= g <= 3 for g in gaps["fleet"]) and len(set(gaps["fleet"])) > 1
    assert all(5 <= g <= 8 for g in gaps["own"])
    assert all(2 <= g <= 5 for g in gaps["group"])
    # a private message whose text ends in "@chatroom" is paced as a private one
    assert all(1 <= g <= 3 for g in gaps["text-at"])


def test_an_accounts_own_pacing_that_cannot_be_read_closes_its_lane_saying_so(
    gate: Gate,
) -> None:
    noon = at("2030-03-01 12:00:00")
    for bad in ({"bulk_jitter": "3-1"}, {"group_jitter": "fast"}, {"quiet_hours": "late"}):
        answer, opens = gate(bad, 0, noon, quiet_hours="")
        assert (answer, opens) == (Answer.BAD_PACING, noon + 60), bad
    assert "cannot be read" in Answer.BAD_PACING.reason


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
    assert r.hget(rig.keys.account("shop"), "bulk_wait") == Answer.QUIET_HOURS
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
    assert r.hget(rig.keys.account("shop"), "bulk_wait") == Answer.DAILY_CAP
    rig.park("reply", "shop")  # replies are not counted nor capped
    assert rig.ids(at("2030-03-01 23:59:59")) == ["reply"]
    rig.done()
    assert rig.ids(at("2030-03-02 00:00:00")) == ["b2", "b3"]


def test_bulk_sends_are_spaced_by_the_configured_jitter(redis_url: str, r: redis.Redis) -> None:
    rig = paced_rig(redis_url, r, quiet_hours="", bulk_jitter_s="2-4", group_jitter_s="5-7")
    rig.online("priv", "grp", "camp", "text-at")
    r.hset(rig.keys.campaigns_jitter, "camp1", "0.5-0.8")
    mirrors.refresh(r, rig.keys, rig.scripts)  # as the campaign's creation does
    pipe = r.pipeline(transaction=False)
    for i in range(8):
        rig.park(f"p{i}", "priv", "bulk", rig.t - 10 + i, pipe)
        rig.park(f"g{i}", "grp", "bulk", rig.t - 10 + i, pipe, to_wxid=f"{i}@chatroom")
        rig.park(f"c{i}", "camp", "bulk", rig.t - 10 + i, pipe, campaign="camp1")
        # a private message whose text ends in "@chatroom" is paced as a private one
        rig.park(f"t{i}", "text-at", "bulk", rig.t - 10 + i, pipe, content="x 9@chatroom")
    pipe.execute()
    start, step = rig.t, 0.05
    sent: dict[str, list[float]] = {"priv": [], "grp": [], "camp": [], "text-at": []}
    for k in range(int(60 / step)):
        for w in rig.tick(start + k * step):
            sent[w.app_id].append(k * step)
    spans = {"priv": (2, 4), "grp": (5, 7), "camp": (0.5, 0.8), "text-at": (2, 4)}
    for app, (low, high) in spans.items():
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
