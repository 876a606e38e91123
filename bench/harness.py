"""Shared set-up for the benchmarks: a throwaway Redis, the simulator, worker processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from wxtasks.accounts import AccountStore
from wxtasks.config import Settings
from wxtasks.dev.redis_server import RedisServer, free_port
from wxtasks.dev.stack import Supervisor, celery_cmd, wait_until, worker_args
from wxtasks.machine import Event
from wxtasks.metrics import max_in_window  # noqa: F401  - re-exported for the benches
from wxtasks.runtime import redis_client

TOKEN = "bench-token"
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
    ) -> list[Any]:
        env = self.env(settings)
        children = []
        for i in range(instances):
            args = worker_args(
                queues, f"bench{i}-{time.monotonic_ns()}", concurrency, "-l", "WARNING"
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
        store = AccountStore(redis_client(settings.redis_url), settings)
        ids = [f"{prefix}-{i:05d}" for i in range(n)]
        for app_id in ids:
            store.register(app_id)
            store.transition(app_id, Event.LOGIN_SUCCEEDED)
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
def bench(profile: str = "videosapi") -> Iterator[Bench]:
    supervisor = Supervisor(log_dir=os.path.join(BENCH_DIR, "results", "logs"))
    with RedisServer() as server:
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
