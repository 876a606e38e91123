"""Shared set-up for the benchmarks: a throwaway Redis, the simulator, worker processes."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import layout
import requests

from wxtasks.config import Settings
from wxtasks.metrics import max_in_window  # noqa: F401  - re-exported for the benches
from wxtasks.runtime import Runtime, redis_client

Event = layout.machine().Event
RedisServer, free_port = layout.redis_server().RedisServer, layout.redis_server().free_port
Supervisor, celery_cmd = layout.stack().Supervisor, layout.stack().celery_cmd
wait_until, worker_args = layout.stack().wait_until, layout.stack().worker_args
TOKEN = "bench-token"
# the benches print their own tables; the library's warnings (alerts, retries) would only
# interleave with them (the worker processes log to bench/results/logs)
logging.getLogger("wxtasks").setLevel(logging.ERROR)
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Bench:
    redis: RedisServer
    supervisor: Supervisor
    sim_url: str
    profile: str

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": self.redis.url,
            "broker_url": self.redis.url[:-1] + "1",
            "gateway_base_url": self.sim_url,
            "gateway_token": TOKEN,
            "gateway_profile": self.profile,
            "heartbeat_interval_s": 3600,
        }
        values.update(overrides)
        return Settings.from_env({}, **values)

    def env(self, settings: Settings) -> dict[str, str]:
        return {
            **settings.environ(),
            "WXTASKS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": BENCH_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }

    def workers(
        self,
        settings: Settings,
        instances: int = 2,
        concurrency: int = 2,
        queues: str = "send,control",
        app: str = "workers",
        options: Sequence[str] = (),
    ) -> list[Any]:
        """``options``: more ``celery worker`` options (``-P solo``)."""
        env = self.env(settings)
        children = []
        for i in range(instances):
            args = worker_args(
                queues, f"bench{i}-{time.monotonic_ns()}", concurrency, "-l", "WARNING", *options
            )
            args[args.index("-A") + 1] = app
            children.append(self.supervisor.start(f"worker-{app}-{i}", args, env))
        from celery import Celery

        probe = Celery(broker=settings.broker_url)
        wait_until(
            lambda: len(probe.control.ping(timeout=0.5) or []) >= instances, 60, 0.2, "workers"
        )
        probe.close()
        return children

    def beat(self, settings: Settings) -> Any:
        return self.supervisor.start(
            "beat", celery_cmd("beat", "-l", "WARNING"), self.env(settings)
        )

    def stop_workers(self, children: list[Any]) -> None:
        for child in children:
            self.supervisor.stop(child)

    def online_accounts(self, settings: Settings, n: int, prefix: str = "acct") -> list[str]:
        rt = Runtime(settings)  # the composition root builds the store as the workers do
        ids = [f"{prefix}-{i:05d}" for i in range(n)]
        for app_id in ids:
            rt.accounts.register(app_id)
            rt.accounts.transition(app_id, Event.LOGIN_SUCCEEDED)
        close(rt)
        return ids

    def sim(self, what: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            return requests.get(f"{self.sim_url}/admin/{what}", timeout=30).json()
        return requests.post(f"{self.sim_url}/admin/{what}", json=body, timeout=30).json()

    def sends(self) -> list[dict[str, Any]]:
        return list(self.sim("sends")["sends"])

    def reset(self) -> None:
        self.sim("reset", {})
        client = redis_client(self.redis.url)
        client.flushall()
        client.close()


@contextmanager
def bench(
    profile: str = "videosapi", *, appendonly: bool = False, logs: str = "logs"
) -> Iterator[Bench]:
    """``logs``: the directory under bench/results the processes log to."""
    supervisor = Supervisor(log_dir=os.path.join(BENCH_DIR, "results", logs))
    with RedisServer(appendonly=appendonly) as server:
        port = free_port()
        try:
            supervisor.start(
                "simulator",
                [
                    sys.executable,
                    "-m",
                    "wxtasks",
                    "simulator",
                    "--port",
                    str(port),
                    "--profile",
                    profile,
                ],
                {"VIDEOS_API_TOKEN": TOKEN},
            )
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ok(url + "/admin/stats"), 20, what="simulator")
            yield Bench(server, supervisor, url, profile)
        finally:
            supervisor.stop_all()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).ok
    except requests.RequestException:
        return False


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


class SendLog:
    """The simulator's record of accepted sends, fetched incrementally (``since=N``), so a
    20,000-send run does not pull the whole list on every poll."""

    def __init__(self, b: Bench) -> None:
        import threading

        self.b = b
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def poll(self) -> list[dict[str, Any]]:
        with self._lock:  # a sampler thread polls too
            reply = self.b.sim(f"sends?since={len(self.items)}")
            self.items.extend(reply["sends"])
            return list(self.items)

    def __len__(self) -> int:
        return len(self.items)


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes and all their children (a prefork worker's
    main process and its pool)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def redis_cpu(client: Any) -> float:
    """The Redis server's own CPU seconds so far (INFO cpu)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


@contextmanager
def rabbitmq_vhost() -> Iterator[str | None]:
    """A throwaway RabbitMQ vhost on 127.0.0.1:5672 (guest), or None when there is none."""
    import shutil
    import socket
    import subprocess
    import uuid

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        yield None
        return
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        yield None
        return
    vhost = f"wxtasks-bench-{uuid.uuid4().hex[:8]}"

    def run(*args: str) -> None:
        subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)

    try:
        run("add_vhost", vhost)
        run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (subprocess.SubprocessError, OSError):
        yield None
        return
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


def no_quiet_hours(settings: Settings, app_ids: list[str]) -> None:
    """Simulated accounts send bulk at any hour (as ``wxtasks dev`` registers its own), so
    a bench gives the same figures whatever the local time: quiet hours off per account."""
    rt = Runtime(settings)
    for app_id in app_ids:
        rt.accounts.update(app_id, pacing={"quiet_hours": ""})
    close(rt)


def close(rt: Runtime) -> None:
    """Release a Runtime's pools (``Runtime.close()``; before it existed, its Redis client)."""
    closer = getattr(rt, "close", None)
    if callable(closer):
        closer()
    else:
        rt.redis.close()


#: bucket rates so high they never bind: what is measured is the dispatcher itself
HIGH = 1_000_000


def high_limits() -> dict[str, Any]:
    """Settings overrides: every bucket (global, gateway default, account) at :data:`HIGH`."""
    return {
        "rate_per_second": HIGH,
        "burst": HIGH,
        "account_rate_per_second": HIGH,
        "account_burst": HIGH,
    }


def high_settings(server: Any) -> Settings:
    """Settings for a bench's throwaway redis-server (state db 0, broker db 1), every
    bucket never binding."""
    return Settings.from_env(
        {}, redis_url=server.url, broker_url=server.url[:-1] + "1", **high_limits()
    )


def waiting(**fields: Any) -> Any:
    """An outbox entry (``Waiting``) with the fields this tree's outbox knows."""
    import dataclasses

    cls = layout.outbox().Waiting
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known})


def fill_outbox(
    rt: Runtime, n_accounts: int, n: int, lane: str, tag: str = "", due_in_s: float = 0.0
) -> list[str]:
    """``n`` waiting messages over ``n_accounts`` ONLINE accounts (quiet hours and bulk
    spacing off), parked in the outbox as the send task parks them."""
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
            task_id=f"t{tag}-{lane}-{i}",
            task="wxtasks.send_text",
            kwargs={"app_id": a, "to_wxid": f"wxid_{i}", "content": f"消息 {i}", "lane": lane},
            app_id=a,
            lane=lane,
            enqueued_at=now + i * 1e-5,
        )
        rt.outbox.park(w, due_in_s, client=pipe)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return apps


def queue_length(broker: Any, queue: str = "send") -> int:
    """Messages on a Redis broker's queue (kombu's priority lists included)."""
    pipe = broker.pipeline(transaction=False)
    for key in (queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def dispatcher_procs(b_supervisor: Any, env: dict[str, str], n: int, tag: str) -> list[Any]:
    """``n`` real dispatcher processes (``python -m wxtasks dispatcher``)."""
    cmd = layout.stack().dispatcher_cmd()
    return [b_supervisor.start(f"{tag}-dispatcher-{i + 1}", cmd, env) for i in range(n)]


def windows_over(times: list[float], width_s: float, allowed: float) -> int:
    """How many windows ``[t, t + width_s]`` starting at an event see more than
    ``allowed`` events (0 when the envelope holds)."""
    import bisect

    ordered = sorted(times)
    return sum(
        1
        for i, t in enumerate(ordered)
        if bisect.bisect_right(ordered, t + width_s + 1e-9) - i > allowed
    )


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain text table, columns aligned."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
