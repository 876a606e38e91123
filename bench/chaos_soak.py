"""Chaos soak (issue 10, "done when"): continuous interactive and bulk load for
``--minutes`` (10) against real processes while things break, then every message
accounted for.

Processes: a Redis started by the bench with AOF (``appendonly yes``, ``everysec``) that is
both the state store and the broker; the simulator (videosapi); 2 send workers x 2
processes, 1 control worker x 2, 1 beat (the schedule) and 2 dispatcher processes
(``python -m wxtasks dispatcher``: they split the shards by leases). Settings at their
defaults (limits 5/s burst 10 and 1/s burst 2, deadlines, visibility timeout, heartbeat
30 s, bulk spacing 1-3 s), except quiet hours off for the simulated accounts.

Load, from plain Celery producers (``Celery(broker, backend).send_task``, as other teams'
apps) and ``WxTasksClient``, half each: ~2 replies a second (``send_text``, each with its
own content) over 20 accounts, and a ``bulk_send`` of 20 recipients every 30 s. A
producer whose publish raises (Redis restarting) publishes again under the same task id,
as a careful app would.

Chaos thread: SIGKILL a random send or control worker's main process about every 30 s
and start a replacement; restart Redis once (SIGTERM, same port, the AOF brings it back)
at 40 % of the run; SIGKILL the beat once at 60 % (a new one is started; it dispatches
nothing, only the schedule); SIGKILL a dispatcher at 70 % (a new one is started; the
other takes its shards when its leases run out); SIGSTOP a dispatcher for 10 s at 80 %
(its leases pass to the other; when it wakes, its dispatch calls are fenced); the gateway
answers 503 for 20 s once at 25 % (simulator fault ``outage``).

After the load stops, a drain period (until every message has an outcome, at most
``--drain`` s), then from the simulator's record of sends, the dead-letter list, the
send results and the campaigns' reports: enqueued, sent exactly once, dead-lettered
(reasons grouped), unknown, lost (goal 0), sent twice outside ``unknown`` (goal 0).

Measured (``--minutes 2``, 2-core shared machine): every fault injected (3 worker
SIGKILLs, 20 s outage, Redis restart, beat SIGKILL: the new beat active 10.5 s later,
dispatcher SIGKILL: every shard held again 3.9 s later, dispatcher SIGSTOP 10 s: every
shard held by the other 3.9 s later, and the paused one, woken, held 0 then rejoined);
321 enqueued (241 replies + 80 bulk targets), 321 sent exactly once, 0 dead-lettered,
0 unknown, lost 0, twice 0: PASS.

    python bench/chaos_soak.py [--minutes 10] [--drain 300] [--seed N]
    # --minutes 2: the shortest that still injects every fault
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from harness import (
    BENCH_DIR,
    Bench,
    SendLog,
    bench,
    dispatcher_procs,
    no_quiet_hours,
    table,
)

from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import celery_cmd, worker_args
from wxtasks.runtime import Runtime
from wxtasks.send.leases import dispatchers_view

ACCOUNTS = 20
REPLIES_PER_S = 2.0
BULK_EVERY_S = 30.0
BULK_SIZE = 20
FINAL = {"sent", "duplicate", "failed", "unknown", "cancelled"}


@dataclass
class Ledger:
    """Every message the bench enqueued: task id -> what it was."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    interactive: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    bulk: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # campaign -> targets
    bulk_content: dict[str, str] = field(default_factory=dict)
    publish_retries: int = 0


@dataclass
class Procs:
    b: Bench
    env: dict[str, str]
    beat_env: dict[str, str]
    send: list[Any] = field(default_factory=list)
    control: list[Any] = field(default_factory=list)
    beats: list[Any] = field(default_factory=list)
    dispatchers: list[Any] = field(default_factory=list)
    n: int = 0
    #: where each beat's log starts for this run (a log file may hold earlier runs)
    log_from: dict[str, int] = field(default_factory=dict)

    def start_worker(self, role: str) -> Any:
        self.n += 1
        child = self.b.supervisor.start(
            f"chaos-{role}-{self.n}",
            worker_args(role, f"{role}{self.n}", 2, "-l", "WARNING"),
            self.env,
        )
        (self.send if role == "send" else self.control).append(child)
        return child

    def start_beat(self) -> Any:
        self.n += 1
        name = f"chaos-beat-{self.n}"
        path = os.path.join(self.b.supervisor.log_dir or "", f"{name}.log")
        self.log_from[name] = os.path.getsize(path) if os.path.exists(path) else 0
        child = self.b.supervisor.start(name, celery_cmd("beat", "-l", "INFO"), self.beat_env)
        self.beats.append(child)
        return child

    def start_dispatcher(self) -> Any:
        self.n += 1
        child = dispatcher_procs(self.b.supervisor, self.beat_env, 1, f"chaos-{self.n}")[0]
        self.dispatchers.append(child)
        return child

    def active_beat(self) -> Any | None:
        """The beat whose log last says it holds the lock (and has not lost it since)."""
        for child in self.beats:
            if not child.alive or not child.log_path:
                continue
            with open(child.log_path, errors="replace") as f:
                f.seek(self.log_from.get(child.name, 0))
                text = f.read()
            held = text.rfind("this beat is active")
            lost = max(text.rfind("lost its lock"), text.rfind("standing by"))
            if held >= 0 and held > lost:
                return child
        return None


class Load(threading.Thread):
    def __init__(self, settings: Any, accounts: list[str], ledger: Ledger, seed: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.accounts, self.ledger = settings, accounts, ledger
        self.stop = threading.Event()
        self.rand = random.Random(seed)
        self.plain = Celery(broker=settings.broker_url, backend=settings.redis_url)
        self.client = WxTasksClient.from_settings(settings)

    def publish(self, plain: bool, name: str, kwargs: dict[str, Any], task_id: str) -> None:
        while True:
            try:
                if plain:
                    self.plain.send_task(name, kwargs=kwargs, queue="send", task_id=task_id)
                else:
                    self.client.task(name, kwargs, task_id=task_id)
                return
            except Exception:
                with self.ledger.lock:
                    self.ledger.publish_retries += 1
                time.sleep(0.5)

    def run(self) -> None:
        n, k = 0, 0
        next_bulk = time.monotonic() + 5.0
        started = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_bulk:
                k += 1
                app = self.rand.choice(self.accounts)
                wxids = [f"wxid_bulk{k}_{i:02d}" for i in range(BULK_SIZE)]
                content = f"群发 {k}"
                task_id = f"chaos-bulk-{k}"
                with self.ledger.lock:
                    self.ledger.bulk[task_id] = [(app, w) for w in wxids]
                    self.ledger.bulk_content[task_id] = content
                self.publish(
                    k % 2 == 0,
                    "wxtasks.bulk_send",
                    {"app_id": app, "to_wxids": wxids, "content": content},
                    task_id,
                )
                next_bulk += BULK_EVERY_S
            n += 1
            app = self.rand.choice(self.accounts)
            to, content = f"customer_{n % 50}", f"reply {n}"
            task_id = f"chaos-reply-{n}"
            with self.ledger.lock:
                self.ledger.interactive[task_id] = (app, to, content)
            self.publish(
                n % 2 == 0,
                "wxtasks.send_text",
                {"app_id": app, "to_wxid": to, "content": content},
                task_id,
            )
            self.stop.wait(max(0.0, started + n / REPLIES_PER_S - time.monotonic()))


class Chaos(threading.Thread):
    def __init__(self, b: Bench, procs: Procs, minutes: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.b, self.procs = b, procs
        self.duration = minutes * 60
        self.rand = random.Random(seed + 1)
        self.stop = threading.Event()
        #: set when the bench is done with every process: the thread that started a child
        #: must outlive it (the supervisor's PR_SET_PDEATHSIG fires when that thread ends)
        self.release = threading.Event()
        self.events: list[tuple[float, str]] = []
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        self.events.append((time.monotonic() - self.t0, what))
        print(f"  [chaos {time.monotonic() - self.t0:6.1f}s] {what}", flush=True)

    def run(self) -> None:
        d = self.duration
        plan = [
            (d * 0.25, "outage"),
            (d * 0.4, "redis"),
            (d * 0.6, "beat"),
            (d * 0.7, "dispatcher"),
            (d * 0.8, "pause"),
        ]
        t = 30.0
        while t < d - 10:
            plan.append((t + self.rand.uniform(-5, 5), "kill"))
            t += 30.0
        plan.sort()
        for at, what in plan:
            if self.stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                break
            try:
                getattr(self, "do_" + what)()
            except Exception as exc:  # the soak goes on; the failure is shown
                self.note(f"{what} failed: {type(exc).__name__}: {exc}")
        self.release.wait()

    def do_kill(self) -> None:
        p = self.procs
        alive = [("send", c) for c in p.send if c.alive] + [
            ("control", c) for c in p.control if c.alive
        ]
        role, victim = self.rand.choice(alive)
        self.b.supervisor.kill(victim)
        p.start_worker(role)
        self.note(f"SIGKILL {victim.name} (pid {victim.process.pid}); started a new {role} worker")

    def do_outage(self) -> None:
        self.b.sim("faults", {"outage": True})
        self.note("gateway outage on (HTTP 503)")
        self.stop.wait(20.0)
        self.b.sim("faults", {"outage": False})
        self.note("gateway outage off (20 s)")

    def do_redis(self) -> None:
        t = time.monotonic()
        self.b.redis.stop()
        self.b.redis.start()
        self.note(f"Redis restarted (SIGTERM, same port, AOF) in {time.monotonic() - t:.1f} s")

    def do_beat(self) -> None:
        active = self.procs.active_beat()
        if active is None:
            self.note("beat: no active beat found in the logs; killing the first one")
            active = next(c for c in self.procs.beats if c.alive)
        self.b.supervisor.kill(active)
        killed = time.monotonic()
        self.note(f"SIGKILL the beat {active.name}")
        self.procs.start_beat()
        while time.monotonic() - killed < 60:
            now_active = self.procs.active_beat()
            if now_active is not None and now_active is not active:
                self.note(
                    f"{now_active.name} took over {time.monotonic() - killed:.1f} s after the kill"
                )
                return
            time.sleep(0.5)
        self.note("no beat took over within 60 s")

    def do_dispatcher(self) -> None:
        victim = self.rand.choice([c for c in self.procs.dispatchers if c.alive])
        self.b.supervisor.kill(victim)
        self.note(f"SIGKILL dispatcher {victim.name} (pid {victim.process.pid})")
        self.wait_all_held(time.monotonic(), victim.process.pid, "after the kill")
        self.procs.start_dispatcher()
        self.note("started a new dispatcher")

    def do_pause(self) -> None:
        victim = self.rand.choice([c for c in self.procs.dispatchers if c.alive])
        os.kill(victim.process.pid, signal.SIGSTOP)
        paused = time.monotonic()
        self.note(f"SIGSTOP dispatcher {victim.name} (pid {victim.process.pid})")
        self.wait_all_held(paused, victim.process.pid, "after the pause")
        self.stop.wait(max(0.0, paused + 10.0 - time.monotonic()))
        os.kill(victim.process.pid, signal.SIGCONT)
        self.note("SIGCONT: the paused dispatcher goes on (fenced until it rejoins)")

    def wait_all_held(self, since: float, pid: int, what: str) -> None:
        """Until the dispatchers other than ``pid`` hold every shard (``dispatchers_view``;
        its own figures say it holds its shards until it drops out of the split)."""
        settings = self.procs.b.settings()
        rt = Runtime(settings)
        try:
            time.sleep(0.5)
            while time.monotonic() - since < 30:
                try:
                    view = dispatchers_view(rt.redis, rt.keys)
                except Exception:
                    time.sleep(0.2)
                    continue
                counts = [
                    d["shards"] for d in view["dispatchers"] if d["id"].split(":")[-2] != str(pid)
                ]
                if not view["unheld_shards"] and sum(counts) >= rt.keys.shards:
                    self.note(
                        f"every shard held again {time.monotonic() - since:.1f} s "
                        f"{what} (shards per dispatcher {counts})"
                    )
                    return
                time.sleep(0.2)
            self.note(f"shards still unheld 30 s {what}")
        finally:
            rt.close()


def account(b: Bench, rt: Runtime, ledger: Ledger, log: SendLog) -> dict[str, Any]:
    """What happened to every message the bench enqueued."""
    sends = log.poll()
    at_gw = Counter((s["appId"], s["toWxid"], s["content"]) for s in sends)
    dead = {str(e.get("task_id")): e for e in rt.deadletters.list()}
    outcome: dict[str, str] = {}
    key: dict[str, tuple[str, str, str]] = {}
    for tid, msg in ledger.interactive.items():
        key[tid] = msg
        meta = rt.celery.backend.get_task_meta(tid)
        result = meta.get("result")
        if meta.get("status") == "SUCCESS" and isinstance(result, dict):
            outcome[tid] = str(result.get("status"))
        else:
            outcome[tid] = f"state {meta.get('status')}"
    for camp, targets in ledger.bulk.items():
        content = ledger.bulk_content[camp]
        try:
            report = {(r["app_id"], r["to_wxid"]): r for r in rt.campaigns.report(camp)}
        except Exception:
            report = {}
        for i, (a, w) in enumerate(targets):
            tid = f"{camp}:{i}"
            key[tid] = (a, w, content)
            r = report.get((a, w))
            outcome[tid] = str(r["status"]) if r else "no campaign"
    rows: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    twice, lost, unknown_twice = [], [], []
    for tid, msg in key.items():
        n = at_gw.get(msg, 0)
        st = outcome[tid]
        in_dead = tid in dead
        rows[f"outcome {st}"] += 1
        if n == 1:
            rows["sent exactly once"] += 1
        elif n > 1:
            (unknown_twice if st == "unknown" else twice).append((tid, n, st))
        if in_dead:
            rows["dead-lettered"] += 1
            e = dead[tid]
            reasons[f"{e.get('status')}: {_short(str(e.get('error')))}"] += 1
        if n == 0 and not in_dead and st not in FINAL - {"sent"}:
            lost.append((tid, st))
    return {
        "enqueued": len(key),
        "interactive": len(ledger.interactive),
        "bulk": len(key) - len(ledger.interactive),
        "rows": rows,
        "reasons": reasons,
        "twice": twice,
        "unknown_twice": unknown_twice,
        "lost": lost,
        "sends": len(sends),
    }


def _short(text: str) -> str:
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with bench(appendonly=True) as b:
        settings = b.settings(heartbeat_interval_s=30)
        rt = Runtime(settings)
        accounts = b.online_accounts(settings, ACCOUNTS)
        no_quiet_hours(settings, accounts)
        env = b.env(settings)
        procs = Procs(b, env, {**env, "WXTASKS_LOG_LEVEL": "INFO"})
        for role in ("send", "send", "control"):
            procs.start_worker(role)
        procs.start_beat()
        for _ in range(2):
            procs.start_dispatcher()
        probe = WxTasksClient.from_settings(settings).app
        deadline = time.monotonic() + 90
        while len(probe.control.ping(timeout=0.5) or []) < 3:
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not answer")
        probe.close()
        log = SendLog(b)
        ledger = Ledger()
        load = Load(settings, accounts, ledger, args.seed)
        chaos = Chaos(b, procs, args.minutes, args.seed)
        print(
            f"chaos soak: {args.minutes:g} min of load, then up to {args.drain:.0f} s drain; "
            f"logs in {os.path.join(BENCH_DIR, 'results', 'logs')}",
            flush=True,
        )
        started = time.monotonic()
        load.start()
        chaos.start()
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(5.0)
            if int(time.monotonic() - started) % 60 < 5:
                print(
                    f"  [{time.monotonic() - started:5.0f}s] enqueued "
                    f"{len(ledger.interactive)} replies, {len(ledger.bulk)} bulk sends; "
                    f"{len(log.poll())} at the gateway",
                    flush=True,
                )
        load.stop.set()
        load.join(30)
        chaos.stop.set()
        load_s = time.monotonic() - started

        drain_started = time.monotonic()
        while time.monotonic() - drain_started < args.drain:
            try:
                r = account(b, rt, ledger, log)
            except Exception as exc:
                print(f"  drain: {type(exc).__name__}: {exc}")
                time.sleep(5.0)
                continue
            pending = sum(
                n
                for k, n in r["rows"].items()
                if k.startswith("outcome ") and k.removeprefix("outcome ") not in FINAL
            )
            if pending == 0:
                break
            print(
                f"  [drain {time.monotonic() - drain_started:4.0f}s] {pending} without an "
                "outcome yet",
                flush=True,
            )
            time.sleep(10.0)
        drain_s = time.monotonic() - drain_started
        r = account(b, rt, ledger, log)

        print(
            f"\n== chaos soak: {args.minutes:g} min load ({load_s:.0f} s), drain "
            f"{drain_s:.0f} s; 2 send + 1 control workers x 2 procs, 1 beat, 2 dispatchers, "
            "Redis with AOF "
            "(state + broker), simulator =="
        )
        print("chaos:")
        for t, what in chaos.events:
            print(f"  {t:6.1f}s  {what}")
        rows = [
            ["enqueued", r["enqueued"], f"{r['interactive']} replies + {r['bulk']} bulk targets"],
            ["sent exactly once", r["rows"]["sent exactly once"], ""],
            ["dead-lettered", r["rows"]["dead-lettered"], "reasons below"],
            [
                "unknown (outcome)",
                r["rows"]["outcome unknown"],
                f"{len(r['unknown_twice'])} of them at the gateway twice",
            ],
            ["lost (goal 0)", len(r["lost"]), ", ".join(f"{t} [{s}]" for t, s in r["lost"][:5])],
            [
                "sent twice outside unknown (goal 0)",
                len(r["twice"]),
                ", ".join(f"{t} x{n} [{s}]" for t, n, s in r["twice"][:5]),
            ],
            ["sends at the gateway (all)", r["sends"], ""],
            ["publishes repeated by producers", ledger.publish_retries, "same task id"],
        ]
        print(table(rows, ["", "messages", "note"]))
        print(
            "outcomes: "
            + ", ".join(
                f"{k.removeprefix('outcome ')} {n}"
                for k, n in sorted(r["rows"].items())
                if k.startswith("outcome ")
            )
        )
        if r["reasons"]:
            print("dead-letter reasons:")
            for reason, n in r["reasons"].most_common():
                print(f"  {n:5d}  {reason}")
        ok = not r["lost"] and not r["twice"]
        print(f"goals (lost 0, sent twice outside unknown 0): {'PASS' if ok else 'FAIL'}")
        with open(os.path.join(BENCH_DIR, "results", "chaos_soak.json"), "w") as f:
            json.dump(
                {k: (v if not isinstance(v, Counter) else dict(v)) for k, v in r.items()},
                f,
                default=str,
                indent=1,
            )
        load.plain.close()
        load.client.app.close()
        b.supervisor.stop_all()
        chaos.release.set()


if __name__ == "__main__":
    main()
