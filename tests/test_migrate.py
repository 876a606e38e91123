"""``wxtasks migrate``: a Redis written by the previous release (key layout 1, before shards)
is moved to layout 2 and a real stack then carries on where the old one stopped. The
layout-1 state is written by hand with the literal key names and value shapes of that
release (commit 33b4e6c's keys.py, outbox.py and park.lua)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from tests.conftest import QUIET_HOURS_OFF, Simulator, Stack, build
from wxtasks.campaigns.store import Content, task_id_of
from wxtasks.cli import main
from wxtasks.config import Settings
from wxtasks.dev.stack import wait_until
from wxtasks.keys import Keys

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ACCOUNTS = ("shop-1", "shop-2", "shop-3")
CAMPAIGN = "promo-11"
#: a message the old release sent: its claim must keep a repeat from going out again
SENT_KEY = "order-42"
#: each account's waiting interactive messages
INTERACTIVE = 2


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _body(
    task_id: str, kwargs: dict[str, Any], app_id: str, lane: str, at: float, **more: Any
) -> str:
    """A parked message as layout 1's ``Waiting.body()`` wrote it."""
    task = more.pop("task", "wxtasks.send_text")
    return _json(
        {
            "task_id": task_id,
            "task": task,
            "kwargs": kwargs,
            "app_id": app_id,
            "lane": lane,
            "enqueued_at": at,
            "attempt": 0,
            "why": "",
            "parked_at": at,
            **more,
        }
    )


def write_layout1(r: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The previous release's state: ONLINE accounts, a gateway, waiting messages in both
    lanes (a running campaign's targets among them, some parked by an even older release
    without their campaign_of / to_group entries), a dispatched message whose lease ran
    out, dead letters, a sent message's claim, a bulk day count. Returns what to expect."""
    now = time.time()
    now_ms = now * 1000
    p = settings.key_prefix
    pipe = r.pipeline(transaction=False)
    for n, a in enumerate(ACCOUNTS):
        pipe.sadd(f"{p}:accounts", a)
        pipe.hset(
            f"{p}:acct:{{{a}}}",
            mapping={
                "state": "ONLINE",
                "version": "2",
                "retry_count": "0",
                "created_at": f"{now - 86400:.3f}",
                "state_since": f"{now - 3600:.3f}",
                "updated_at": f"{now - 3600:.3f}",
                "last_heartbeat_at": f"{now - 60:.3f}",
                "login_started_at": "",
                "last_error": "",
                "note": f"store {n}",
                "tags": '["east"]',
            },
        )
        pipe.zadd(f"{p}:schedule:heartbeat", {a: now + 3600})
    pipe.set(f"{p}:bucket:{{shop-1}}", f"{now_ms:.0f}", px=600_000)
    pipe.sadd(f"{p}:gateways", "gw-b")
    pipe.hset(
        f"{p}:gateway:gw-b",
        mapping={
            "base_url": "http://gw-b.invalid",
            "profile": "v1",
            "token_env": "GW_B_TOKEN",
            "rate": "5",
            "burst": "5",
            "note": "backup",
            "created_at": f"{now:.3f}",
        },
    )
    sends: set[tuple[str, str]] = set()  # (appId, recipient) of every message to go out
    for a in ACCOUNTS:
        for i in range(INTERACTIVE):
            task_id, to = f"int-{a}-{i}", f"wxid_{a}_{i}"
            kwargs = {"app_id": a, "to_wxid": to, "content": f"reply {i}"}
            pipe.hset(
                f"{p}:outbox:messages",
                task_id,
                _body(task_id, kwargs, a, "interactive", now - 5 + i),
            )
            pipe.zadd(f"{p}:outbox:{{{a}}}:interactive", {task_id: (now - 5 + i) * 1000})
            sends.add((a, to))
        pipe.zadd(f"{p}:outbox:ready:interactive", {a: now_ms})
    # a dispatched message whose holder died: its lease ended a second ago
    kwargs = {"app_id": "shop-2", "to_wxid": "wxid_inflight", "content": "in flight"}
    pipe.hset(
        f"{p}:outbox:messages", "flying", _body("flying", kwargs, "shop-2", "interactive", now - 9)
    )
    pipe.zadd(f"{p}:outbox:inflight", {"flying": now_ms - 1000})
    sends.add(("shop-2", "wxid_inflight"))
    # dead letters: one failed, one unknown that names its (layout-1) claim
    unknown_claim = f"{p}:claim:{{shop-3}}:" + hashlib.sha256(b"key\0dl-unknown").hexdigest()[:32]
    pipe.hset(unknown_claim, mapping={"owner": "dead-2", "status": "unknown"})
    pipe.expire(unknown_claim, settings.dedup_ttl_s)
    for i, (status, to, claim) in enumerate(
        [("failed", "wxid_dl_failed", ""), ("unknown", "wxid_dl_unknown", unknown_claim)], 1
    ):
        kw = {"app_id": "shop-3", "to_wxid": to, "content": "dead", "dedup_key": f"dl-{status}"}
        entry = {
            "task_id": f"dead-{i}",
            "task": "wxtasks.send_text",
            "kwargs": kw,
            "status": status,
            "error": "gateway said no",
            "app_id": "shop-3",
            "to_wxid": to,
            "content": "dead",
            "attempts": 1,
            "lane": "interactive",
            "claim_key": claim,
            "dead_lettered_at": now - 100 + i,
        }
        pipe.hset(f"{p}:deadletters", f"dead-{i}", _json(entry))
        pipe.zadd(f"{p}:deadletters:order", {f"dead-{i}": now - 100 + i})
    # a message the old release sent, and its claim (dedup) with its TTL running
    claim = f"{p}:claim:{{shop-1}}:" + hashlib.sha256(f"key\0{SENT_KEY}".encode()).hexdigest()[:32]
    pipe.hset(
        claim,
        mapping={
            "owner": "old-task",
            "status": "sent",
            "msgId": "1",
            "newMsgId": "9007199254740993",
            "createTime": str(int(now)),
        },
    )
    pipe.expire(claim, settings.dedup_ttl_s)
    day = datetime.now(ZoneInfo(settings.timezone)).strftime("%Y%m%d")
    pipe.set(f"{p}:bulkday:{{shop-1}}:{day}", "3", ex=2 * 86400)
    pipe.set(f"{p}:seen:{{shop-2}}:int-shop-2-0", f"{now_ms:.0f}", ex=600)
    pipe.set(f"{p}:inbound:seen:{{shop-2}}:777", "inbound-task", ex=86400)
    pipe.execute()
    return {"sends": sends, "claim": claim, "unknown_claim": unknown_claim, "day": day}


def add_campaign(r: redis.Redis, settings: Settings, sends: set[tuple[str, str]]) -> int:
    """A running campaign whose targets wait in layout 1's bulk lanes (its records'
    keys did not change, so the current API writes them; scheduled first so that it parks
    nothing itself, then started by hand the way the old beat did)."""
    rt = build(r, settings)
    p = settings.key_prefix
    targets = [(a, f"wxid_c_{a}_{j}") for a in ACCOUNTS for j in range(2)]
    targets.append(("shop-1", "room-1@chatroom"))
    rt.campaigns.create(
        CAMPAIGN,
        Content.parse("text", {"content": "双11 活动"}),
        targets,
        start_at=time.time() + 3600,
        jitter="0-0",
    )
    r.hdel(rt.keys.campaigns_jitter, CAMPAIGN)  # created before that index existed
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.hset(rt.keys.campaign(CAMPAIGN), mapping={"state": "running", "started_at": f"{now:.3f}"})
    pipe.zrem(rt.keys.campaigns_scheduled, CAMPAIGN)
    for index, (a, to) in enumerate(targets):
        task_id = task_id_of(CAMPAIGN, index)
        kwargs = {
            "app_id": a,
            "to_wxid": to,
            "lane": "bulk",
            "dedup_key": f"campaign:{CAMPAIGN}:{a}:{to}",
        }
        at = now - 60 + index * 1e-5
        pipe.hset(
            f"{p}:outbox:messages",
            task_id,
            _body(task_id, kwargs, a, "bulk", at, task="wxtasks.send_text", campaign=CAMPAIGN),
        )
        pipe.zadd(f"{p}:outbox:{{{a}}}:bulk", {task_id: at * 1000})
        pipe.zadd(f"{p}:outbox:ready:bulk", {a: now * 1000})
        if index % 2 == 0:  # the others were parked by an older release: no entries
            pipe.hset(f"{p}:outbox:campaign_of", task_id, CAMPAIGN)
        sends.add((a, to))
    pipe.execute()
    return len(targets)


def dump(r: redis.Redis) -> dict[str, Any]:
    """Every key's type and value (TTLs as present or not)."""
    out: dict[str, Any] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        read = {
            "string": r.get,
            "hash": r.hgetall,
            "set": lambda k: sorted(r.smembers(k)),
            "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
            "list": lambda k: r.lrange(k, 0, -1),
            "stream": r.xrange,
        }[kind]
        value: Any = read(key)
        out[key] = (kind, value, r.ttl(key) > 0)
    return out


def cli(settings: Settings, *args: str) -> Any:
    result = CliRunner().invoke(main, list(args), env=settings.environ(), catch_exceptions=False)
    return result


def migrate_json(settings: Settings, *args: str) -> dict[str, Any]:
    result = cli(settings, "migrate", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


@pytest.fixture
def settings(make_stack: Any, simulator: Simulator) -> Settings:
    # default settings; quiet hours off so the bulk lane does not depend on the time of day
    stack: Stack = make_stack(simulator, quiet_hours=QUIET_HOURS_OFF)
    return stack.settings


def test_a_migrated_redis_carries_on_where_the_old_release_stopped(
    r: redis.Redis, make_stack: Any, simulator: Simulator
) -> None:
    stack: Stack = make_stack(simulator, quiet_hours=QUIET_HOURS_OFF)
    settings = stack.settings
    old = write_layout1(r, settings)
    sends: set[tuple[str, str]] = old["sends"]
    targets = add_campaign(r, settings, sends)
    keys = Keys(settings.key_prefix, settings.shards)
    claim_ttl = r.ttl(old["claim"])

    dry = migrate_json(settings, "--dry-run")
    assert dry["status"] == "dry-run" and not r.exists(keys.layout)
    report = migrate_json(settings)
    assert report["moved"] == dry["moved"]
    moved = report["moved"]
    assert moved["accounts"] == 3 and moved["buckets"] == 1 and moved["claims"] == 2
    assert moved["messages"] == len(sends) and moved["dispatched"] == 1
    assert moved["lanes"] == 3 + 3 and moved["ready"] == 3 + 3
    assert moved["campaign_of_filled"] == targets // 2 and moved["to_group_filled"] == 1
    assert moved["bulkday"] == moved["seen"] == moved["inbound_seen"] == 1
    assert moved["deadletter_claim_keys"] == 1 and moved["unreadable"] == 0
    assert moved["campaign_jitter_filled"] == 1
    assert r.hget(keys.campaigns_jitter, CAMPAIGN) == "0-0"  # its own spacing, read by the gates

    # nothing of layout 1 is left; TTLs came along
    leftover = [k for k in r.scan_iter(count=1000) if ":{s" not in k and "{" in k.split(":")[-1]]
    assert [k for k in leftover if not k.startswith(f"{keys.prefix}:campaign:")] == []
    assert not r.exists(f"{keys.prefix}:outbox:messages", f"{keys.prefix}:outbox:inflight")
    new_claim = keys.claim("shop-1", old["claim"].rsplit(":", 1)[1])
    assert r.ttl(new_claim) > 0 and 0 <= claim_ttl - r.ttl(new_claim) <= 5
    assert 0 < r.ttl(keys.bulk_day("shop-1", old["day"])) <= 2 * 86400
    assert r.pttl(keys.account_bucket("shop-1")) > 0
    assert (
        r.hget(keys.outbox_campaign_of(keys.shard("shop-1")), task_id_of(CAMPAIGN, 6)) == CAMPAIGN
    )
    assert r.sismember(keys.outbox_to_group(keys.shard("shop-1")), task_id_of(CAMPAIGN, 6))

    # a second run says so and changes nothing
    before = dump(r)
    again = migrate_json(settings)
    assert again["status"] == "already" and not any(again["moved"].values())
    assert dump(r) == before

    stack.worker("send,control", "mig", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)

    def sent() -> list[tuple[str, str]]:
        return [(s["appId"], s["toWxid"]) for s in simulator.sends()]

    wait_until(lambda: set(sent()) >= sends, 60, 0.2, "every waiting message to be sent")
    rt = build(r, settings)
    wait_until(lambda: rt.campaigns.show(CAMPAIGN)["state"] == "done", 20, 0.2, "the campaign")
    assert not rt.outbox.waiting() and rt.outbox.stats()["inflight"]["dispatched"] == 0
    assert sorted(sent()) == sorted(sends), "each exactly once"

    # accounts kept their records; the gateway its registration
    record = rt.accounts.get("shop-1")
    assert record is not None and record.state.value == "ONLINE"
    assert r.hget(keys.account("shop-2"), "note") == "store 1"
    assert r.hget(keys.account("shop-2"), "tags") == '["east"]'
    assert r.hget(keys.gateway("gw-b"), "note") == "backup"

    # the message the old release sent, sent again within its dedup TTL: a duplicate
    producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
    try:
        again_sent = producer.send_task(
            "wxtasks.send_text",
            kwargs={"app_id": "shop-1", "to_wxid": "wxid_x", "content": "x", "dedup_key": SENT_KEY},
            queue="send",
        )
        assert again_sent.get(timeout=30)["status"] == "duplicate"
    finally:
        producer.close()

    # dead letters are listed and requeue works (the unknown one's claim is dropped)
    listed = json.loads(cli(settings, "deadletters", "list", "--json").output)
    assert sorted(e["task_id"] for e in listed) == ["dead-1", "dead-2"]
    result = cli(settings, "deadletters", "requeue", "--all")
    assert result.exit_code == 0 and "2 requeued" in result.output, result.output
    wait_until(
        lambda: {("shop-3", "wxid_dl_failed"), ("shop-3", "wxid_dl_unknown")} <= set(sent()),
        30,
        0.2,
        "the requeued dead letters to be sent",
    )
    assert not r.exists(old["unknown_claim"])


def test_processes_of_this_release_refuse_a_layout_1_redis(
    r: redis.Redis, make_stack: Any, simulator: Simulator
) -> None:
    stack: Stack = make_stack(simulator)
    write_layout1(r, stack.settings)
    worker = stack.worker("send,control", "old", 1)
    dispatcher = stack.dispatcher()
    for child in (worker, dispatcher):
        wait_until(lambda c=child: not c.alive, 60, 0.2, f"{child.name} to exit")
        assert child.process.returncode != 0
        assert child.log_path is not None
        with open(child.log_path, encoding="utf-8") as f:
            log = f.read()
        assert "run `wxtasks migrate`" in log, log[-2000:]
    with open(dispatcher.log_path or "", encoding="utf-8") as f:
        log = f.read()
    assert dispatcher.process.returncode == 1 and "Traceback" not in log, log[-2000:]
    assert log.strip().splitlines()[-1].startswith("error: ")
    assert not r.exists(Keys(stack.settings.key_prefix).layout), "nothing marked it"


def test_migrate_refuses_while_processes_look_alive(r: redis.Redis, settings: Settings) -> None:
    write_layout1(r, settings)
    keys = Keys(settings.key_prefix, settings.shards)
    r.set(keys.beat_lock, "old-beat", px=60_000)
    result = cli(settings, "migrate")
    assert result.exit_code == 1
    assert result.output.startswith("error: wxtasks processes look alive")
    assert len(result.output.strip().splitlines()) == 1
    r.delete(keys.beat_lock)
    r.zadd(keys.dispatchers, {"d-1": (time.time() + 60) * 1000, "d-gone": 1})
    result = cli(settings, "migrate")
    assert result.exit_code == 1 and "1 dispatcher(s) alive" in result.output
    assert not r.exists(keys.layout) and r.exists(f"{keys.prefix}:outbox:messages")
    assert migrate_json(settings, "--force")["status"] == "migrated"


def test_a_run_killed_halfway_is_finished_by_the_next(r: redis.Redis, settings: Settings) -> None:
    """One account renamed, a ready entry and a message moved (what a run killed between
    batches leaves): the next run finishes, and ends where one whole run ends (the same
    state under a second prefix, migrated at once)."""
    from wxtasks import migrate
    from wxtasks.scripts import Scripts

    whole = dataclasses.replace(settings, key_prefix="wz")
    for s in (settings, whole):
        old = write_layout1(r, s)
        add_campaign(r, s, old["sends"])
    migrate.migrate(r, Keys("wz", whole.shards))
    keys = Keys(settings.key_prefix, settings.shards)
    scripts = Scripts(r)
    p = keys.prefix
    scripts.migrate_rename(keys=[f"{p}:acct:{{shop-1}}", keys.account("shop-1")], args=[])
    scripts.migrate_split(
        keys=[f"{p}:outbox:ready:bulk", keys.outbox_ready(keys.shard("shop-2"), "bulk")],
        args=["shop-2"],
    )
    kinds = ("messages", "inflight", "held", "campaign_of", "to_group")
    scripts.migrate_messages(
        keys=[
            *(f"{p}:outbox:{k}" for k in kinds),
            *migrate._shard_keys(keys, keys.shard("shop-2")),
        ],
        args=["flying", "", "0"],
    )
    report = migrate.migrate(r, keys)
    assert report.moved["accounts"] == 2 and report.moved["dispatched"] == 0

    def shape(prefix: str) -> dict[str, Any]:
        """Key -> type and members/fields (the values hold the times they were written)."""
        out: dict[str, Any] = {}
        for key, (kind, value, ttl) in dump(r).items():
            if key.startswith(f"{prefix}:") and kind != "stream":
                members = sorted(value) if kind in ("hash", "set") else value
                if kind == "zset":
                    members = sorted(m for m, _ in value)
                out[key[len(prefix) :]] = (kind, members if kind != "string" else None, ttl)
        return out

    assert shape(p) == shape("wz")


def test_an_empty_redis_is_just_marked(r: redis.Redis, settings: Settings) -> None:
    report = migrate_json(settings)
    assert report["status"] == "migrated" and not any(report["moved"].values())
    assert r.hgetall(Keys(settings.key_prefix).layout) == {
        "version": "2",
        "shards": str(settings.shards),
    }
    result = cli(settings, "migrate")
    assert result.exit_code == 0 and "already on layout 2" in result.output
