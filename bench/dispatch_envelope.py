"""The gateway's rate envelope with sharded dispatch: 2 real dispatcher processes, real send
workers and the gateway simulator. Goal: 0 windows over the envelope.

Global bucket ``--rate`` (50/s) burst ``--burst`` (10); account buckets at their defaults;
``--accounts`` (256) ONLINE accounts over all 64 shards; ``--n`` (2,500) ``send_text``
tasks from a plain Celery producer (interactive lane), all at once, so every shard
borrows from the global bucket at the same time. 2 send worker instances x 4 processes,
2 ``python -m wxtasks dispatcher``. From the simulator's record of accepted sends: for
each window width T, how many windows ``[t, t + T]`` (one starting at each send) hold more
than burst + rate * T + slack sends, slack = rate * REFILL_S + 1 (a borrowed token lapses
after REFILL_S); and the long-run rate against the bucket's.

The cost per message (the capacity model in the README is built from it): worker CPU
(psutil, every process of both instances), dispatcher CPU, Redis CPU (INFO cpu) and
commands of the state Redis (state and Celery results) and of the broker (a second
redis-server here, so the two are told apart; commands from INFO commandstats, those
inside Lua included), from the first enqueue to the last send at the gateway, less the
processes' idle rate (3 s measured before the load). Twice: the envelope run above
(every message through the outbox: admitted, parked, dispatched, sent), and
``--cost-n`` (3,000) more with limits so high they never bind (a send admitted at once
goes straight to the gateway).

Measured (2-core shared machine, other sessions' test suites beside it)::

    T s   allowed (10 + 50*T + 6)   max in T   windows over
    0.25          28.5                22          0
    0.5           41.0                35          0
    1             66.0                60          0
    2            116.0               110          0
    5            266.0               260          0
    2,500 sends in 50.4 s; long-run 50.01/s (+0.0 % of 50/s); 0 windows over (goal 0)

    cost per message       workers   dispatchers   state Redis          broker Redis
    through the outbox     6.81 ms   ~0 (idle)     0.89 ms, 106 cmds    0.15 ms, 12.9 cmds
    admitted at once       3.54 ms   ~0            0.24 ms, 25.8 cmds   0.16 ms, 11.7 cmds
    idle: 2 dispatchers 0.036 cores, state Redis 0.015 cores and 6,820 commands/s

Through the outbox a message is two tasks (admitted and parked, then the dispatched send);
its Redis figure is with the global bucket binding: all 64 shards wait on it and are
polled every tick (a dispatch call and a borrow per waiting shard), about 5,300 commands
a second above idle that do not grow with the rate. The dispatchers' own CPU at 50/s is
lost in their idle ticks (see ``dispatch_scale.py``: 0.17 ms per message).

    python bench/dispatch_envelope.py [--rate 50] [--burst 10] [--n 2500] [--cost-n 3000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness import (
    Bench,
    bench,
    cpu_seconds,
    dispatcher_procs,
    high_limits,
    max_in_window,
    redis_cpu,
    table,
    windows_over,
)
from send_pipeline import enqueue, producer, wait_sends

from wxtasks.dev.redis_server import RedisServer
from wxtasks.keys import shard_of
from wxtasks.runtime import Runtime, redis_client
from wxtasks.send.dispatcher import REFILL_S

WIDTHS = (0.25, 0.5, 1.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=256)
    parser.add_argument("--n", type=int, default=2_500)
    parser.add_argument("--cost-n", type=int, default=3_000)
    args = parser.parse_args()
    rate, burst = args.rate, args.burst
    slack = rate * REFILL_S + 1
    with bench() as b, RedisServer() as broker:
        settings = b.settings(rate_per_second=rate, burst=burst, broker_url=broker.url)
        accounts = b.online_accounts(settings, args.accounts)
        shards = {shard_of(a, settings.shards) for a in accounts}
        meter = Meter(b, settings)
        messages = [
            (accounts[i % len(accounts)], f"wxid_{i}", f"envelope {i}") for i in range(args.n)
        ]
        t0 = time.monotonic()
        enqueue(producer(b, settings), "wxtasks.send_text", messages)
        sends = wait_sends(b, args.n, args.n / rate * 2 + 60)
        wall = time.monotonic() - t0
        costs = [("through the outbox (global 50/s binding)", meter.per_message(len(sends)))]
        if args.cost_n:
            b.reset()
            settings = b.settings(**high_limits(), broker_url=broker.url)
            accounts = b.online_accounts(settings, args.accounts)
            meter = Meter(b, settings)
            messages = [
                (accounts[i % len(accounts)], f"wxid_c{i}", f"cost {i}") for i in range(args.cost_n)
            ]
            t_cost = time.time()
            enqueue(producer(b, settings), "wxtasks.send_text", messages)
            done = wait_sends(b, args.cost_n, 600)
            label = (
                f"admitted at once (limits never binding, "
                f"{len(done) / (max(s['at'] for s in done) - t_cost):,.0f} msgs/s)"
            )
            costs.append((label, meter.per_message(len(done))))
    times = sorted(s["at"] for s in sends)
    rows = []
    total_over = 0
    for w in WIDTHS:
        allowed = burst + rate * w + slack
        over = windows_over(times, w, allowed)
        total_over += over
        rows.append([w, f"{allowed:.1f}", max_in_window(times, w), over])
    long_run = (len(times) - burst) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    print(
        f"\n== gateway envelope: global {rate:g}/s burst {burst}, {len(accounts)} accounts over "
        f"{len(shards)} shards, {args.n:,} msgs, 2 dispatchers, 2 x 4 send workers =="
    )
    print(table(rows, ["T s", "allowed (burst + rate*T + slack)", "max in T", "windows over"]))
    print(
        f"{len(sends):,} sends at the gateway in {wall:.1f} s; long-run {long_run:.2f}/s "
        f"({(long_run / rate - 1) * 100:+.1f} % of {rate:g}/s); slack {slack:g}; "
        f"windows over the envelope: {total_over} (goal 0)"
    )
    print("\n== cost per message (idle cost subtracted: measured for 3 s before each load) ==")
    print(
        table(
            [
                [
                    label,
                    f"{c['worker'] * 1000:.2f}",
                    f"{c['dispatcher'] * 1000:.2f}",
                    f"{c['redis'] * 1000:.2f}",
                    f"{c['commands']:.1f}",
                    f"{c['broker'] * 1000:.2f}",
                    f"{c['broker_commands']:.1f}",
                ]
                for label, c in costs
            ],
            [
                "path",
                "send workers ms CPU",
                "dispatchers ms CPU",
                "state Redis ms CPU",
                "state Redis commands (Lua's too)",
                "broker Redis ms CPU",
                "broker commands",
            ],
        )
    )
    print(
        "idle, per second: "
        + "; ".join(
            f"workers {c['idle_worker']:.3f} cores, dispatchers {c['idle_dispatcher']:.3f}, "
            f"state Redis {c['idle_redis']:.3f}, {c['idle_commands']:.0f} commands"
            for _, c in costs[:1]
        )
    )


class Meter:
    """Starts 2 send worker instances x 4 and 2 dispatchers; their CPU, Redis's CPU and
    commands: an idle rate over 3 s, then from now to ``per_message`` (which stops them)."""

    def __init__(self, b: Bench, settings: Any) -> None:
        self.b = b
        self.workers = b.workers(settings, instances=2, concurrency=4)
        self.dispatchers = dispatcher_procs(b.supervisor, b.env(settings), 2, "envelope")
        self.rt = Runtime(settings)
        self.broker = redis_client(settings.broker_url)
        time.sleep(2.0)  # the dispatchers split the shards
        first = self.read()
        time.sleep(3.0)
        self.start = self.read()
        span = self.start[0] - first[0]
        self.idle = [(b - a) / span for a, b in zip(first, self.start, strict=True)]

    def read(self) -> list[float]:
        return [
            time.monotonic(),
            cpu_seconds([c.process.pid for c in self.workers]),
            cpu_seconds([c.process.pid for c in self.dispatchers]),
            redis_cpu(self.rt.redis),
            commands(self.rt.redis),
            redis_cpu(self.broker),
            commands(self.broker),
        ]

    def per_message(self, n: int) -> dict[str, float]:
        end = self.read()
        self.b.supervisor.stop_many(self.workers + self.dispatchers)
        self.rt.close()
        self.broker.close()
        wall = end[0] - self.start[0]
        net = [
            (e - s - idle * wall) / n
            for s, e, idle in zip(self.start[1:], end[1:], self.idle[1:], strict=True)
        ]
        return {
            "worker": net[0],
            "dispatcher": net[1],
            "redis": net[2],
            "commands": net[3],
            "broker": net[4],
            "broker_commands": net[5],
            "idle_worker": self.idle[1],
            "idle_dispatcher": self.idle[2],
            "idle_redis": self.idle[3],
            "idle_commands": self.idle[4],
        }


def commands(client: Any) -> float:
    """Commands a Redis server ran so far (INFO commandstats; inside Lua included)."""
    return float(sum(int(v["calls"]) for v in client.info("commandstats").values()))


if __name__ == "__main__":
    main()
