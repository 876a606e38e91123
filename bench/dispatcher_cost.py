"""What the outbox dispatcher costs: messages dispatched per second per core.

100,000 waiting messages over 1,000 ONLINE accounts, parked in the outbox of a throwaway
Redis; bucket rates so high they never bind (1,000,000/s), so what is measured is the
dispatcher itself. ``Dispatcher.tick()`` is driven in a loop in this process, as the
active beat would, until the outbox is empty. CPU = this process (``time.process_time``)
+ the Redis server (``INFO cpu`` delta): dispatched / (process + Redis CPU seconds) is
the rate one core would sustain.

Rows: the interactive lane and the bulk lane (pacing gates read and checked per account;
spacing ``0-0`` and no quiet hours, so the gates are open) with a publish function that
only collects the batch; then the interactive lane publishing for real (Celery send_task
to a Redis broker, as ``wxtasks.worker.beat.publisher`` does in the beat).

    python bench/dispatcher_cost.py [--quick]      # --quick: 10,000 over 100 accounts
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import time
from typing import Any

import layout
from harness import Event, redis_cpu, table

from wxtasks.config import Settings
from wxtasks.runtime import Runtime

HIGH = 1_000_000


def waiting(**fields: Any) -> Any:
    """An outbox entry (``Waiting``) with the fields this tree's outbox knows."""
    cls = layout.outbox().Waiting
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known})


def publisher(rt: Runtime) -> Any:
    """What the active beat publishes dispatched messages with (send_task to the broker)."""
    return layout.beat().publisher(rt.celery, rt.campaigns)


def dispatcher_for(rt: Runtime, publish: Any) -> Any:
    """A Dispatcher as the beat gets its own: from the Runtime (``rt.dispatcher(publish)``),
    or, in trees before the Runtime built it, constructed as the beat did."""
    if callable(getattr(rt, "dispatcher", None)):
        return rt.dispatcher(publish)
    cls = layout.dispatcher().Dispatcher
    options = {"fleet": rt.fleet} if "fleet" in inspect.signature(cls).parameters else {}
    return cls(rt.outbox, publish, **options)


def fill(rt: Runtime, n_accounts: int, n: int, lane: str) -> list[str]:
    store = rt.accounts
    apps = [f"acct-{i:05d}" for i in range(n_accounts)]
    for a in apps:
        store.register(a, pacing={"quiet_hours": "", "bulk_jitter": "0-0"})
        store.transition(a, Event.LOGIN_SUCCEEDED)
    now = time.time()
    pipe = rt.redis.pipeline(transaction=False)
    for i in range(n):
        a = apps[i % n_accounts]
        w = waiting(
            task_id=f"t-{lane}-{i}",
            task="wxtasks.send_text",
            kwargs={"app_id": a, "to_wxid": f"wxid_{i}", "content": f"消息 {i}", "lane": lane},
            app_id=a,
            lane=lane,
            enqueued_at=now + i * 1e-5,
        )
        rt.outbox.park(w, 0.0, client=pipe)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return apps


def drain(rt: Runtime, n: int, publish: Any, timeout_s: float | None = None) -> dict[str, Any]:
    """Tick until ``n`` went out (``timeout_s``: give up after so long, stuck)."""
    dispatcher = dispatcher_for(rt, publish)
    ticks, sent, longest = 0, 0, 0.0
    cpu0, rcpu0, t0 = time.process_time(), redis_cpu(rt.redis), time.perf_counter()
    while sent < n:
        t = time.perf_counter()
        got = dispatcher.tick()
        longest = max(longest, time.perf_counter() - t)
        ticks += 1
        sent += got
        late = timeout_s is not None and time.perf_counter() - t0 > timeout_s
        if ticks > 100_000 or late:
            raise RuntimeError(f"stuck at {sent}/{n} after {ticks} ticks")
    wall = time.perf_counter() - t0
    cpu, rcpu = time.process_time() - cpu0, redis_cpu(rt.redis) - rcpu0
    return {"n": sent, "ticks": ticks, "wall": wall, "cpu": cpu, "rcpu": rcpu, "longest": longest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_accounts, n = (100, 10_000) if args.quick else (1_000, 100_000)
    rows = []
    with layout.redis_server().RedisServer() as server:
        settings = Settings.from_env(
            {},
            redis_url=server.url,
            broker_url=server.url[:-1] + "1",
            rate_per_second=HIGH,
            burst=HIGH,
            account_rate_per_second=HIGH,
            account_burst=HIGH,
        )
        for label, lane, real in (
            ("interactive, collect", "interactive", False),
            ("bulk (gates), collect", "bulk", False),
            ("interactive, publish to broker", "interactive", True),
        ):
            rt = Runtime(settings)
            rt.redis.flushall()
            t_fill = time.perf_counter()
            fill(rt, n_accounts, n, lane)
            fill_s = time.perf_counter() - t_fill
            collected: list[int] = []

            def collect(batch: list[Any], out: list[int] = collected) -> None:
                out.append(len(batch))

            publish = publisher(rt) if real else collect
            r = drain(rt, n, publish)
            per_core = r["n"] / (r["cpu"] + r["rcpu"])
            rows.append(
                [
                    label,
                    f"{r['n']:,}",
                    f"{fill_s:.1f}",
                    f"{r['wall']:.1f}",
                    f"{r['n'] / r['wall']:,.0f}",
                    f"{r['cpu']:.1f}",
                    f"{r['rcpu']:.1f}",
                    f"{per_core:,.0f}",
                    f"{(r['cpu'] + r['rcpu']) / r['n'] * 1e6:.0f}",
                    r["ticks"],
                    f"{r['longest']:.1f}",
                ]
            )
            print(f"  {label}: {r}", flush=True)
            if real:
                rt.celery.close()
            rt.redis.close()
    print(
        f"\n== dispatcher cost: {n:,} waiting messages over {n_accounts:,} accounts, "
        "buckets never binding, Dispatcher.tick() in a loop =="
    )
    print(
        table(
            rows,
            [
                "lane, publish",
                "dispatched",
                "park s",
                "wall s",
                "msgs/s wall",
                "proc CPU s",
                "Redis CPU s",
                "msgs/s per core",
                "us CPU/msg",
                "ticks",
                "longest tick s",
            ],
        )
    )
    print(
        "per core = dispatched / (this process's CPU + Redis server CPU). One tick goes on "
        "while a lane call fills its 500: with nothing binding, one tick takes the whole "
        "backlog (compare the longest tick with the beat lock's 10 s and the 60 s lease)"
    )


if __name__ == "__main__":
    main()
