"""How long a SIGKILLed send worker's messages take to come back: Redis broker vs RabbitMQ.

The scenario of tests/test_crash_safety.py with the settings a user gets (visibility
timeout, deadlines): global 30/s burst 10, account 10/s burst 10, 600 messages (570
distinct + 30 repeats) over 10 accounts, v1 profile; two send worker instances x 2
processes and a beat. After 100 sends the victim's main process gets SIGKILL (its pool
children are orphaned, as in a real crash of the main process) and a replacement worker
starts, as an orchestrator would.

Which messages the victim held is read from Celery's task events: received by the victim
as their latest receiver, no outcome from it, and not parked in the outbox at the kill.
Per repetition: how many it held, seconds from the kill until the last of them is at the
gateway and until its outcome is recorded (the result), seconds until every message is at
the gateway or dead-lettered, sent twice, lost. Redis broker, RabbitMQ classic queues
and RabbitMQ quorum queues (when a RabbitMQ answers on 127.0.0.1:5672 and rabbitmqctl can
make a vhost).

Goal: the last held message at the gateway within 30 s of the kill.

    python bench/crash_recovery.py [--quick] [--reps N]     # --quick: 1 rep, 200 messages
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from typing import Any

from harness import SendLog, bench, rabbitmq_vhost, table

from wxtasks.client import WxTasksClient
from wxtasks.config import Settings
from wxtasks.dev.stack import worker_args
from wxtasks.runtime import Runtime

RATE, BURST = 30, 10
TERMINAL = {"task-succeeded", "task-failed", "task-rejected", "task-revoked", "task-retried"}


class Events(threading.Thread):
    """Celery task events: per task id, the latest receiver and whether it finished."""

    def __init__(self, app: Any) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.lock = threading.Lock()
        self.receiver_of: dict[str, str] = {}
        self.finished_by: dict[str, set[str]] = {}
        self.ready = threading.Event()
        self.recv: Any = None

    def on_event(self, event: dict[str, Any]) -> None:
        kind, uuid, host = event.get("type"), event.get("uuid"), event.get("hostname", "")
        if not uuid:
            return
        with self.lock:
            if kind == "task-received":
                self.receiver_of[uuid] = host
                self.finished_by.setdefault(uuid, set()).discard(host)
            elif kind in TERMINAL:
                self.finished_by.setdefault(uuid, set()).add(host)

    def run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.recv = self.app.events.Receiver(conn, handlers={"*": self.on_event})
            self.ready.set()
            try:
                self.recv.capture(limit=None, timeout=None, wakeup=False)
            except Exception:  # the connection goes when the bench ends
                pass

    def held_by(self, host: str) -> set[str]:
        with self.lock:
            return {
                uuid
                for uuid, receiver in self.receiver_of.items()
                if receiver == host and host not in self.finished_by.get(uuid, set())
            }

    def stop(self) -> None:
        if self.recv is not None:
            self.recv.should_stop = True


def run_once(b: Any, broker: str, amqp_url: str | None, n_distinct: int) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if amqp_url:
        overrides = {"broker_url": amqp_url, "quorum_queues": broker.endswith("quorum")}
    settings: Settings = b.settings(
        rate_per_second=RATE,
        burst=BURST,
        account_rate_per_second=10,
        account_burst=10,
        **overrides,
    )
    defaults = Settings()
    assert settings.visibility_timeout_s == defaults.visibility_timeout_s
    assert settings.send_deadline_s == defaults.send_deadline_s
    rt = Runtime(settings)
    accounts = b.online_accounts(settings, 10)
    env = b.env(settings)
    stamp = time.monotonic_ns()
    victim_name = f"victim{stamp}"

    def start(role: str, name: str, queues: str) -> Any:
        return b.supervisor.start(
            f"{broker}-{role}-{stamp}", worker_args(queues, name, 2, "-l", "WARNING"), env
        )

    client = WxTasksClient.from_settings(settings)
    events = Events(client.app)
    events.start()
    events.ready.wait(30)
    victim = start("victim", victim_name, "send")
    others = [start("survivor", f"survivor{stamp}", "send,control")]
    others.append(b.beat(settings))
    deadline = time.monotonic() + 60
    while len(client.app.control.ping(timeout=0.5) or []) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("workers")
    log = SendLog(b)

    distinct = [(accounts[i % 10], f"wxid_{i % 7}", f"message {i}") for i in range(n_distinct)]
    repeats = [distinct[i * 19] for i in range(n_distinct // 19)]
    results = [client.send_text(a, t, c) for a, t, c in distinct + repeats]
    content_of = {r.id: c for r, (_, _, c) in zip(results, distinct + repeats, strict=True)}
    app_of = {r.id: a for r, (a, _, _) in zip(results, distinct + repeats, strict=True)}
    while len(log.poll()) < 100:
        time.sleep(0.05)
    time.sleep(0.3)  # let the events of what it holds arrive
    victim_host = f"{victim_name}@"
    # what it holds, read before the kill: on RabbitMQ its messages go to another worker
    # at once, whose "received" event would hide where they were
    with events.lock:
        hosts = {h for h in events.receiver_of.values() if h.startswith(victim_host)}
    held = set().union(*(events.held_by(h) for h in hosts)) if hosts else set()
    b.supervisor.kill(victim)  # SIGKILL the main process only
    killed_at = time.time()
    others.append(start("replacement", f"replacement{stamp}", "send"))
    time.sleep(1.0)  # events it sent just before the kill
    with events.lock:
        held = {t for t in held if not events.finished_by.get(t, set()) & hosts}
    pipe = rt.redis.pipeline(transaction=False)
    held_list = sorted(held)
    for tid in held_list:
        pipe.zscore(rt.keys.outbox_lane(app_of.get(tid, ""), "interactive"), tid)
    parked = {t for t, score in zip(held_list, pipe.execute(), strict=True) if score is not None}
    held -= parked
    with events.lock:
        seen_events = Counter(h.split("@")[0][:8] for h in events.receiver_of.values())

    def dead_contents() -> set[str]:
        return {str(e.get("content")) for e in rt.deadletters.list()}

    settle_deadline = killed_at + 120
    wanted = {c for _, _, c in distinct}
    settled_at = None
    while time.time() < settle_deadline:
        at_gateway = {s["content"] for s in log.poll()}
        if wanted <= at_gateway | dead_contents():
            settled_at = time.time()
            break
        time.sleep(0.25)
    outcomes = Counter()
    result_at: dict[str, float] = {}
    for r in results:
        try:
            outcomes[r.get(timeout=60)["status"]] += 1
            meta = client.app.backend.get_task_meta(r.id)
            done = meta.get("date_done")
            if done is not None and r.id in held:
                result_at[r.id] = _ts(done)
        except Exception as exc:
            outcomes[f"no result ({type(exc).__name__})"] += 1
    sends = log.poll()
    first_at: dict[str, float] = {}
    for s in sends:
        first_at.setdefault(s["content"], s["at"])
    held_at = [first_at[content_of[t]] - killed_at for t in held if content_of[t] in first_at]
    held_missing = [t for t in held if content_of[t] not in first_at]
    twice = [c for c, n in Counter(s["content"] for s in sends).items() if n > 1]
    dead = dead_contents()
    lost = [c for c in wanted if c not in first_at and c not in dead]
    events.stop()
    client.app.close()
    for child in [victim, *others]:
        b.supervisor.stop(child, timeout_s=10)
    return {
        "broker": broker,
        "held": len(held),
        "tasks_seen_in_events": seen_events,
        "parked_at_kill": len(parked),
        "held_at_gateway_s": max(held_at) if held_at else None,
        "held_not_at_gateway": len(held_missing),
        "held_result_s": max(result_at.values()) - killed_at if result_at else None,
        "settled_s": settled_at - killed_at if settled_at else None,
        "outcomes": dict(outcomes),
        "twice": len(twice),
        "lost": len(lost),
        "dead": len(dead),
    }


def _ts(value: Any) -> float:
    import datetime as dt

    d = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--brokers", default="redis,rabbitmq,rabbitmq-quorum")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    n_distinct = 190 if args.quick else 570
    rows = []
    with bench("v1") as b:
        for broker in args.brokers.split(","):
            for rep in range(reps):
                b.reset()
                if broker == "redis":
                    r = run_once(b, broker, None, n_distinct)
                else:
                    with rabbitmq_vhost() as url:
                        if url is None:
                            print(f"{broker}: no RabbitMQ on 127.0.0.1:5672; skipped")
                            break
                        r = run_once(b, broker, url, n_distinct)
                print(f"  {broker} rep {rep + 1}: {r}", flush=True)
                rows.append(r)

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    print(
        f"\n== crash recovery: {n_distinct + n_distinct // 19} messages, 10 accounts, "
        f"{RATE}/s burst {BURST}, 2 send workers x 2 procs + beat; SIGKILL one worker's main "
        "process after 100 sends, a replacement starts =="
    )
    print(
        table(
            [
                [
                    r["broker"],
                    r["held"],
                    f(r["held_at_gateway_s"]),
                    f(r["held_result_s"]),
                    f(r["settled_s"]),
                    r["twice"],
                    r["lost"],
                    r["dead"],
                    " ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items())),
                ]
                for r in rows
            ],
            [
                "broker",
                "held",
                "held at gw s",
                "held result s",
                "all settled s",
                "twice",
                "lost",
                "dead",
                "outcomes",
            ],
        )
    )
    worst = max((r["held_at_gateway_s"] or 0.0) for r in rows) if rows else float("nan")
    print(
        f"goal: the last held message at the gateway within 30 s of the kill; worst "
        f"{worst:.1f} s: {'PASS' if worst <= 30 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
