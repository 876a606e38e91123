"""Publishing dispatched send tasks: one by one (``send_task`` per message, as the beat
does today) against ``wxtasks.worker.publish.batch_publisher``, side by side.

N dispatched messages in batches of ``DISPATCH_BATCH`` to a throwaway Redis broker, and
to RabbitMQ when one answers on 127.0.0.1:5672 (its queue purged after). CPU = this
process (``time.process_time``); for Redis also the server's (``INFO cpu``).

    python bench/publish_batch.py [--n 20000]
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import layout
from celery import Celery
from harness import redis_cpu, table

from wxtasks.config import Settings
from wxtasks.runtime import Runtime
from wxtasks.send.dispatcher import DISPATCH_BATCH, Dispatched
from wxtasks.send.outbox import Waiting
from wxtasks.worker.celeryconf import SEND_QUEUE, configure
from wxtasks.worker.publish import batch_publisher, one_by_one_publisher


def batches(n: int, tag: str) -> list[list[Dispatched]]:
    now = time.time()
    items = [
        Dispatched(
            Waiting(
                task_id=f"{tag}-{i}",
                task="wxtasks.send_text",
                kwargs={
                    "app_id": f"acct-{i % 100}",
                    "to_wxid": f"wxid_{i}",
                    "content": f"消息 {i}",
                },
                app_id=f"acct-{i % 100}",
                lane="interactive",
                enqueued_at=now,
            ),
            now * 1000,
        )
        for i in range(n)
    ]
    return [items[i : i + DISPATCH_BATCH] for i in range(0, n, DISPATCH_BATCH)]


def run(app: Celery, rt: Runtime, n: int, batched: bool, rclient: Any) -> dict[str, float]:
    make = batch_publisher if batched else one_by_one_publisher
    publish = make(app, rt.campaigns)
    work = batches(n, "b" if batched else "o")
    publish(work[0][:1])  # connect, declare
    rcpu0 = redis_cpu(rclient) if rclient is not None else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for b in work:
        publish(b)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rcpu = redis_cpu(rclient) - rcpu0 if rclient is not None else 0.0
    return {"wall": wall, "cpu": cpu + rcpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    rows: list[list[Any]] = []
    with layout.redis_server().RedisServer() as server:
        targets = [("redis", server.url[:-1] + "1")]
        try:
            socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
            targets.append(("rabbitmq", "amqp://guest:guest@127.0.0.1:5672//"))
        except OSError:
            print("no RabbitMQ on 127.0.0.1:5672: Redis only")
        for label, broker in targets:
            settings = Settings.from_env({}, redis_url=server.url, broker_url=broker)
            rt = Runtime(settings)
            app = configure(Celery("wxtasks"), settings)
            rclient = rt.redis if label == "redis" else None
            res = {b: run(app, rt, args.n, b, rclient) for b in (False, True)}
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge(SEND_QUEUE)
            app.close()
            for b in (False, True):
                r = res[b]
                rows.append(
                    [
                        label,
                        "batch" if b else "one by one",
                        f"{args.n / r['wall']:,.0f}",
                        f"{r['cpu'] / args.n * 1e6:.0f}",
                        f"{res[False]['cpu'] / r['cpu']:.1f}x",
                    ]
                )
    print(f"\n== publishing {args.n:,} dispatched messages in batches of {DISPATCH_BATCH} ==")
    print(table(rows, ["broker", "publisher", "msgs/s", "us CPU/msg", "CPU vs one by one"]))


if __name__ == "__main__":
    main()
