"""Guard the hot paths: the send, heartbeat, Redis and dispatch figures of this tree, side by
side with another commit's, in one run of about 3 minutes.

    python bench/hotpaths.py [--against REV] [--rounds 8] [--sends 200] [--budget 160]
                             [--markdown]

Figures (each tree measures them in its own stack: Redis, the simulator, real workers):

- **send ratio against bare Celery**, for a plain producer (``send_task("wxtasks.send_text",
  queue="send", kwargs=...)``, no wxtasks header) and for ``WxTasksClient``. The issue's
  set-up: one worker x 4 prefork processes, sends over 20 accounts, profile ``v1``, rates
  unlimited; the baseline (``bench/baseline_app.py``: a bare task that only POSTs) has the
  same Celery settings, broker, result backend and log level. Throughput = sends / (last
  one at the gateway - first enqueue). A round sends half its messages per side twice, in
  mirrored order (bare, plain, client, client, plain, bare; the next round the other way
  round), and rounds alternate the trees; the ratio is the median of the rounds' paired
  ratios. The issue's 1,500 sends per round are scaled down (``--sends``) and the rounds
  are as many as fit the time budget (at least 3): the output says how many. The workers
  stay up across rounds (warmed up once). Worker CPU per send is shown beside (steadier
  than throughput on a shared machine).
- **CPU per heartbeat**: the ``wxtasks.heartbeat`` task by name, run in the agent's
  process as a control worker's pool process runs it (``Lifecycle.heartbeat`` behind it),
  over 1,000 ONLINE accounts in batches of ``WXTASKS_HEARTBEAT_BATCH``, probing the
  simulator; this process's CPU (``time.process_time``, probe threads included) and the
  state Redis server's (``INFO cpu``), per heartbeat.
- **Redis round trips and commands per send**, for a send admitted at once, from a plain
  producer and from the client: a worker (``bench/hotpaths_app.py``, ``-P solo``) on its
  own state Redis (the broker and result backend are another Redis) counts each
  ``send_packed_command`` (a round trip; what it held is listed) and each reply read (a
  command) on its state connections; "Redis ran" is the state Redis's own
  ``INFO commandstats`` delta, commands inside Lua included.
- **dispatch throughput**: messages parked in the outbox (``bench/dispatcher_cost.py``'s
  fill), then the Dispatcher's ``tick()`` in a loop, publishing to a Redis broker as the
  beat does, until all are on the broker (checked): messages per wall second, and CPU
  (this process + the state Redis) per message.

``--against REV`` checks REV out in a temporary ``git worktree`` (removed afterwards). Each
tree runs in its own throwaway environment (this interpreter's site-packages, the tree's
own source first, nothing of an editable install of another checkout), as a long-lived
agent process this script talks to; this directory's measurement code runs in both and
finds the modules of either layout (``bench/layout.py``). A part a tree cannot run (before
the outbox existed there is nothing to dispatch) shows "n/a" with the reason.

It is a benchmark, not a test: the figures move with the machine's load. Each cell shows
the median and the range over the repeats; a timed figure is "WORSE" only when it moved
the wrong way by more than its tolerance and each tree's median is out of the other's
range. Absolute send rates and the bare baseline's own CPU are context only: the ratios
beside them are what is guarded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import layout  # imports nothing of wxtasks until asked

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)

ACCOUNTS = 20
INSTANCES, PROCESSES = 1, 4
PROFILE = "v1"
HEARTBEAT_ACCOUNTS, HEARTBEAT_REPEATS = 1_000, 5
ROUND_TRIP_SENDS = 100
DISPATCH_MESSAGES, DISPATCH_ACCOUNTS, DISPATCH_REPEATS = 2_000, 100, 3
#: broker / result databases of the agent's Redis (state and results of the throughput
#: workers are db 0, their broker db 1): each worker role has its own broker, so no role
#: takes another's messages
BARE_BROKER_DB, COUNT_BROKER_DB, COUNT_RESULTS_DB, DISPATCH_BROKER_DB = 4, 2, 3, 5
#: where a heartbeat's follow-ups (a reconnect, an alert) would go: no worker takes them
HEARTBEAT_BROKER_DB = 6
#: the dispatch measurement's state, on the counting Redis (db 0 is the counting worker's)
DISPATCH_STATE_DB = 3
PROTOCOL = "@@"
#: send rounds run even past the time budget (a median of fewer says little)
MIN_ROUNDS = 3
#: what stopping the agents and their stacks and removing the worktree take
SHUTDOWN_S = 8


# ---------------------------------------------------------------------------------------
# the agent: runs inside one tree's environment and measures on request
# ---------------------------------------------------------------------------------------


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


class Stack:
    """One tree's stack: Redis, the simulator, a wxtasks worker and a bare Celery worker
    (1 x 4 prefork each), a counting worker (solo) on its own state Redis, the heartbeat
    task in this process.

    Each part is set up on its own: one this tree cannot run (a part of wxtasks it does not
    have yet, or a set-up the code under test broke) makes only its figures "n/a"."""

    def __init__(self, b: Any, state_server: Any, sends: int) -> None:
        from harness import SendLog

        from wxtasks.runtime import redis_client

        self.b = b
        self.sends = sends
        self.state_server = state_server
        self.log = SendLog(b)
        self.redis = redis_client(b.redis.url)
        self.apps: list[Any] = []
        self.children: list[Any] = []
        #: part -> why it could not be set up
        self.broken: dict[str, str] = {}
        for part, setup in (
            ("sends", self._sends_part),
            ("counter", self._counter_part),
            ("heartbeat", self._heartbeat_part),
        ):
            try:
                setup()
            except Exception as exc:
                traceback.print_exc()
                self.broken[part] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def _check(self, part: str) -> None:
        if part in self.broken:
            raise RuntimeError(f"not set up in this tree: {self.broken[part]}")

    def _sends_part(self) -> None:
        from celery import Celery
        from send_overhead import HIGH, enqueue, wait_sends

        from wxtasks.client import WxTasksClient

        b = self.b
        self.enqueue, self.wait_sends = enqueue, wait_sends
        self.settings = b.settings(**HIGH)
        self.accounts = b.online_accounts(self.settings, ACCOUNTS)
        bare = b.settings(**HIGH, broker_url=_db(b.redis.url, BARE_BROKER_DB))
        self.ours = b.workers(self.settings, INSTANCES, PROCESSES, app="workers")
        self.children += self.ours
        self.bare = b.workers(bare, INSTANCES, PROCESSES, app="baseline_app")
        self.children += self.bare
        self.producers = {
            "bare": Celery(broker=bare.broker_url, backend=bare.result_backend_url),
            "plain": Celery(
                broker=self.settings.broker_url, backend=self.settings.result_backend_url
            ),
        }
        self.client = WxTasksClient.from_settings(self.settings)
        self.apps += [*self.producers.values(), self.client.app]
        # warm-up: connections, script caches, the first task of every pool process
        for kind in ("bare", "plain", "client"):
            self._send_batch(kind, "warm", 100)

    def _counter_part(self) -> None:
        """The counting worker: its own state Redis, broker and results elsewhere."""
        from celery import Celery
        from send_overhead import HIGH

        from wxtasks.client import WxTasksClient

        b = self.b
        self.count_settings = b.settings(
            **HIGH,
            redis_url=self.state_server.url,
            broker_url=_db(b.redis.url, COUNT_BROKER_DB),
            result_backend_url=_db(b.redis.url, COUNT_RESULTS_DB),
        )
        self.count_accounts = b.online_accounts(self.count_settings, ACCOUNTS)
        self.counter = b.workers(
            self.count_settings, 1, 1, queues="send", app="hotpaths_app", options=("-P", "solo")
        )
        self.children += self.counter
        self.count_producer = Celery(
            broker=self.count_settings.broker_url, backend=self.count_settings.result_backend_url
        )
        self.count_client = WxTasksClient.from_settings(self.count_settings)
        self.apps += [self.count_producer, self.count_client.app]
        self.redis_counts(reset=True)
        for kind in ("plain", "client"):
            self._count_batch(kind, "warm", 20)

    def _heartbeat_part(self) -> None:
        """The ``wxtasks.heartbeat`` task by name, run in this process as a control
        worker's pool process runs it: an app configured by wxtasks (its settings on the
        app, not in this process's environment, which Celery would read for every app)."""
        from celery import Celery

        import wxtasks.tasks  # noqa: F401  - registers the tasks (shared) with every app

        settings = self.b.settings(
            gateway_timeout_s=5, broker_url=_db(self.b.redis.url, HEARTBEAT_BROKER_DB)
        )
        app = layout.celeryconf().configure(Celery("hotpaths-heartbeat"), settings)
        self.apps.append(app)
        self.hb_task = app.tasks["wxtasks.heartbeat"]
        self.hb_ids = self.b.online_accounts(settings, HEARTBEAT_ACCOUNTS, prefix="hb")
        self.hb_batch = int(settings.heartbeat_batch)
        self.heartbeat()

    def close(self) -> None:
        for app in self.apps:
            app.close()
        self.redis.close()
        self.b.stop_workers(self.children)

    # -- send throughput ----------------------------------------------------------------

    def _messages(self, tag: str, n: int) -> list[tuple[str, str, str]]:
        return [(self.accounts[i % ACCOUNTS], f"wxid_{i}", f"hotpaths {tag} {i}") for i in range(n)]

    def _send_batch(self, kind: str, tag: str, n: int) -> dict[str, float]:
        from harness import cpu_seconds, redis_cpu

        messages = self._messages(f"{kind} {tag}", n)
        workers = self.bare if kind == "bare" else self.ours
        pids = [w.process.pid for w in workers]
        sim = [c.process.pid for c in self.b.supervisor.children if c.name == "simulator"]
        before = len(self.log.poll())
        cpu0, rcpu0, scpu0 = cpu_seconds(pids), redis_cpu(self.redis), cpu_seconds(sim)
        started, pcpu0 = time.time(), time.process_time()
        if kind == "client":
            with self.client.app.producer_or_acquire() as producer:
                for a, t, c in messages:
                    self.client.send_text(a, t, c, producer=producer)
        else:
            task = "bench.post" if kind == "bare" else "wxtasks.send_text"
            self.enqueue(self.producers[kind], task, messages)
        enqueued, pcpu = time.time() - started, time.process_time() - pcpu0
        got = self.wait_sends(self.log, before + n, 120)[before:]
        if len(got) < n:
            raise RuntimeError(f"{kind}: {len(got)} of {n} sends reached the gateway in 120 s")
        at = sorted(float(x["at"]) for x in got)
        elapsed = at[-1] - started
        worker = cpu_seconds(pids) - cpu0
        redis = redis_cpu(self.redis) - rcpu0
        gateway = cpu_seconds(sim) - scpu0
        return {
            "per_s": n / elapsed,
            "worker_cpu_ms": worker / n * 1000,
            "redis_cpu_ms": redis / n * 1000,
            "stack_cpu_ms": (worker + redis + gateway + pcpu) / n * 1000,
            "enqueue_s": enqueued,
            "first_s": at[0] - started,
            "gap_s": max(b - a for a, b in itertools.pairwise(at)),
        }

    def sends_round(self, round_no: int) -> dict[str, dict[str, float]]:
        """Each side sends half the round's messages twice, in mirrored order (bare, plain,
        client, client, plain, bare; the next round starts with client), so a load that
        drifts during the round weighs on every side alike."""
        self._check("sends")
        kinds = ["bare", "plain", "client"]
        if round_no % 2:
            kinds.reverse()
        half = self.sends // 2
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for i, k in enumerate(kinds + kinds[::-1]):
            runs[k].append(self._send_batch(k, f"r{round_no}.{i}", half))
        return {
            k: {
                "per_s": 2 * half / sum(half / x["per_s"] for x in xs),
                "worker_cpu_ms": statistics.mean(x["worker_cpu_ms"] for x in xs),
                "redis_cpu_ms": statistics.mean(x["redis_cpu_ms"] for x in xs),
                "stack_cpu_ms": statistics.mean(x["stack_cpu_ms"] for x in xs),
                "enqueue_s": max(x["enqueue_s"] for x in xs),
                "first_s": max(x["first_s"] for x in xs),
                "gap_s": max(x["gap_s"] for x in xs),
            }
            for k, xs in runs.items()
        }

    # -- CPU per heartbeat --------------------------------------------------------------

    def heartbeat(self) -> dict[str, float]:
        from harness import redis_cpu

        self._check("heartbeat")
        alive = 0
        cpu0, rcpu0, wall0 = time.process_time(), redis_cpu(self.redis), time.perf_counter()
        for i in range(0, len(self.hb_ids), self.hb_batch):
            ids = self.hb_ids[i : i + self.hb_batch]
            report = self.hb_task(app_ids=ids, due=[time.time()] * len(ids))
            alive += int(report["alive"])
        wall = time.perf_counter() - wall0
        cpu, rcpu = time.process_time() - cpu0, redis_cpu(self.redis) - rcpu0
        n = len(self.hb_ids)
        if alive != n:
            raise RuntimeError(f"heartbeat: {alive} of {n} accounts answered alive")
        return {"cpu_ms": cpu / n * 1000, "redis_us": rcpu / n * 1e6, "wall_ms": wall / n * 1000}

    # -- Redis round trips per send -----------------------------------------------------

    def redis_counts(self, reset: bool = False) -> dict[str, Any]:
        result = self.count_producer.send_task(
            "bench.redis_counts", kwargs={"reset": reset}, queue="send"
        )
        counts: dict[str, Any] = result.get(timeout=30)
        return counts

    def _count_batch(self, kind: str, tag: str, n: int) -> list[str]:
        messages = self._messages(f"count {kind} {tag}", n)
        if kind == "client":
            results = [self.count_client.send_text(a, t, c) for a, t, c in messages]
        else:
            results = [
                self.count_producer.send_task(
                    "wxtasks.send_text",
                    queue="send",
                    kwargs={"app_id": a, "to_wxid": t, "content": c},
                )
                for a, t, c in messages
            ]
        return [str(r.get(timeout=60)["status"]) for r in results]

    def roundtrips(self) -> dict[str, dict[str, Any]]:
        from wxtasks.runtime import redis_client

        self._check("counter")
        state = redis_client(self.count_settings.redis_url)
        out = {}
        for kind in ("plain", "client"):
            self.redis_counts(reset=True)
            state.config_resetstat()
            statuses = self._count_batch(kind, "measure", ROUND_TRIP_SENDS)
            counts = self.redis_counts()
            calls = {
                k.removeprefix("cmdstat_"): int(v["calls"])
                for k, v in state.info("commandstats").items()
                if k not in ("cmdstat_info", "cmdstat_config", "cmdstat_ping")
            }
            ran = sum(calls.values())
            n = len(statuses)
            if statuses.count("sent") != n:
                raise RuntimeError(f"round trips ({kind}): not all sent at once: {statuses}")
            out[kind] = {
                "round_trips": counts["round_trips"] / n,
                "commands": counts["commands"] / n,
                "redis_ran": ran / n,
                "shapes": {k: v / n for k, v in counts["shapes"].items()},
                "ran": {k: v / n for k, v in calls.items()},
            }
        state.close()
        return out

    # -- dispatch throughput ------------------------------------------------------------

    def dispatch(self, lane: str) -> dict[str, float]:
        import dispatcher_cost
        from harness import HIGH, close, fill_outbox

        from wxtasks.runtime import Runtime, redis_client

        settings = self.b.settings(
            redis_url=_db(self.state_server.url, DISPATCH_STATE_DB),
            broker_url=_db(self.b.redis.url, DISPATCH_BROKER_DB),
            result_backend_url=_db(self.b.redis.url, DISPATCH_BROKER_DB),
            rate_per_second=HIGH,
            burst=HIGH,
            account_rate_per_second=HIGH,
            account_burst=HIGH,
        )
        broker = redis_client(settings.broker_url)
        rt = Runtime(settings)
        try:
            rt.redis.flushdb()
            broker.flushdb()
            fill_outbox(rt, DISPATCH_ACCOUNTS, DISPATCH_MESSAGES, lane)
            publish = dispatcher_cost.publisher(rt)
            r = dispatcher_cost.drain(rt, DISPATCH_MESSAGES, publish, timeout_s=30)
            on_broker = int(broker.llen("send"))
        finally:
            rt.redis.flushdb()
            close(rt)
            broker.flushdb()
            broker.close()
        if on_broker != DISPATCH_MESSAGES:
            raise RuntimeError(f"dispatch: {on_broker} of {DISPATCH_MESSAGES} on the broker")
        return {
            "per_s": r["n"] / r["wall"],
            "cpu_us": (r["cpu"] + r["rcpu"]) / r["n"] * 1e6,
        }


def agent(name: str, sends: int) -> None:
    """Serve measurement requests (JSON lines on stdin), one JSON answer line each on
    stdout, prefixed with PROTOCOL; anything else the code prints goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr

    def answer(obj: dict[str, Any]) -> None:
        out.write(PROTOCOL + json.dumps(obj) + "\n")
        out.flush()

    from harness import RedisServer, bench

    try:
        with bench(PROFILE, logs=f"logs-hotpaths-{name}") as b, RedisServer() as state:
            t0 = time.perf_counter()
            stack = Stack(b, state, sends)
            import wxtasks

            answer({"ok": {"setup_s": time.perf_counter() - t0, "wxtasks": wxtasks.__file__}})
            try:
                for line in sys.stdin:
                    request = json.loads(line)
                    if request["do"] == "quit":
                        break
                    try:
                        answer({"ok": getattr(stack, request["do"])(*request.get("args", []))})
                    except Exception:
                        answer({"error": traceback.format_exc()})
            finally:
                stack.close()
    except Exception:
        answer({"error": traceback.format_exc()})


# ---------------------------------------------------------------------------------------
# the orchestrator: trees, environments, agents, alternation, the report
# ---------------------------------------------------------------------------------------


def git(*args: str, cwd: str = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Tree:
    label: str
    path: str
    python: str = ""
    agent: subprocess.Popen[str] | None = None
    log: IO[str] | None = None
    results: dict[str, Any] = field(default_factory=dict)
    #: phase -> why it could not be measured in this tree
    failed: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, sends: int, log_path: str) -> None:
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.agent = subprocess.Popen(
            [self.python, os.path.abspath(__file__), "--agent", name, "--sends", str(sends)],
            cwd=self.path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def read(self) -> Any:
        assert self.agent is not None and self.agent.stdout is not None
        for line in self.agent.stdout:
            if line.startswith(PROTOCOL):
                reply = json.loads(line[len(PROTOCOL) :])
                if "error" in reply:
                    raise AgentError(self.label, reply["error"])
                return reply["ok"]
        raise AgentError(self.label, f"the agent ended (exit {self.agent.wait()})")

    def ask(self, do: str, *args: Any) -> Any:
        assert self.agent is not None and self.agent.stdin is not None
        self.agent.stdin.write(json.dumps({"do": do, "args": list(args)}) + "\n")
        self.agent.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            assert self.agent.stdin is not None
            with contextlib.suppress(OSError):
                self.agent.stdin.write(json.dumps({"do": "quit"}) + "\n")
                self.agent.stdin.close()
            try:
                self.agent.wait(60)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        if self.log is not None:
            self.log.close()


class AgentError(RuntimeError):
    def __init__(self, label: str, detail: str) -> None:
        super().__init__(f"[{label}] {detail}")


def environment(tree: str, where: str) -> str:
    """A throwaway venv whose ``sys.path`` is ``tree`` first, then this interpreter's
    site-packages (their ``.pth`` files, an editable install's finder among them, are not
    run: nothing points back at another checkout). Returns its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", where], check=True, capture_output=True
    )
    site = sysconfig.get_path("purelib", vars={"base": where, "platbase": where})
    ours = [
        p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)
    ]
    Path(site, "00-tree.pth").write_text(tree + "\n")
    Path(site, "01-deps.pth").write_text("\n".join(ours) + "\n")
    return os.path.join(where, "bin", "python")


@contextlib.contextmanager
def worktree(rev: str, parent: str) -> Iterator[str]:
    path = os.path.join(parent, "tree-" + rev.replace("/", "_"))
    git("worktree", "add", "--detach", path, rev)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT, check=False)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)


def describe(path: str) -> str:
    sha = git("rev-parse", "--short", "HEAD", cwd=path)
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=path)
    return sha + ("+changes" if dirty else "")


# -- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    #: "higher" or "lower" is better
    better: str
    #: relative change within which a timed figure counts as the same (0: a count)
    tolerance: float
    fmt: str
    #: absolute change within which a count is the same (a time-based cache refreshed
    #: once in a run adds a hundredth to a per-send count)
    absolute: float = 0.0
    #: False: shown for context, no verdict (absolute send rates follow the machine's
    #: load, the bare baseline is not wxtasks' code; the ratios are what is guarded)
    guarded: bool = True


FIGURES = (
    Figure("send ratio vs bare Celery, plain producer", "x", "higher", 0.05, "{:.2f}"),
    Figure("send ratio vs bare Celery, WxTasksClient", "x", "higher", 0.05, "{:.2f}"),
    Figure("CPU ratio (bare CPU / ours) per send, plain", "x", "higher", 0.05, "{:.2f}"),
    Figure("CPU ratio (bare CPU / ours) per send, client", "x", "higher", 0.05, "{:.2f}"),
    Figure("sends/s, bare Celery (the baseline)", "/s", "higher", 0.10, "{:.0f}", guarded=False),
    Figure("sends/s, plain producer", "/s", "higher", 0.10, "{:.0f}", guarded=False),
    Figure("sends/s, WxTasksClient", "/s", "higher", 0.10, "{:.0f}", guarded=False),
    Figure("worker CPU per send, bare Celery", "ms", "lower", 0.10, "{:.2f}", guarded=False),
    Figure("worker CPU per send, plain producer", "ms", "lower", 0.10, "{:.2f}"),
    Figure("worker CPU per send, WxTasksClient", "ms", "lower", 0.10, "{:.2f}"),
    Figure("Redis CPU per send, bare Celery", "ms", "lower", 0.10, "{:.2f}", guarded=False),
    Figure("Redis CPU per send, plain producer", "ms", "lower", 0.10, "{:.2f}"),
    Figure("Redis CPU per send, WxTasksClient", "ms", "lower", 0.10, "{:.2f}"),
    Figure("CPU per heartbeat (process)", "ms", "lower", 0.10, "{:.3f}"),
    Figure("Redis CPU per heartbeat", "us", "lower", 0.15, "{:.0f}"),
    Figure("Redis round trips per send, plain producer", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("Redis round trips per send, WxTasksClient", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("Redis commands sent per send, plain producer", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("Redis commands sent per send, WxTasksClient", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("Redis ran per send (incl. in Lua), plain", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("Redis ran per send (incl. in Lua), client", "", "lower", 0.0, "{:.2f}", 0.05),
    Figure("dispatch throughput, interactive lane", "msg/s", "higher", 0.10, "{:,.0f}"),
    Figure("dispatch throughput, bulk lane", "msg/s", "higher", 0.10, "{:,.0f}"),
    Figure("dispatch CPU per message, interactive", "us", "lower", 0.10, "{:.0f}"),
    Figure("dispatch CPU per message, bulk", "us", "lower", 0.10, "{:.0f}"),
)


def samples(r: dict[str, Any]) -> dict[str, list[float]]:
    """Each figure's samples from one tree's raw results: one per round (the send ratios
    are paired: plain / bare and client / bare of the same round), or one count."""
    sends, hb, rt, disp = r["sends"], r["heartbeat"], r["roundtrips"], r["dispatch"]
    kinds = ("bare", "plain", "client")
    counted = ("round_trips", "commands", "redis_ran")
    values = [
        [x["plain"]["per_s"] / x["bare"]["per_s"] for x in sends],
        [x["client"]["per_s"] / x["bare"]["per_s"] for x in sends],
        [x["bare"]["stack_cpu_ms"] / x["plain"]["stack_cpu_ms"] for x in sends],
        [x["bare"]["stack_cpu_ms"] / x["client"]["stack_cpu_ms"] for x in sends],
        *[[x[k]["per_s"] for x in sends] for k in kinds],
        *[[x[k]["worker_cpu_ms"] for x in sends] for k in kinds],
        *[[x[k]["redis_cpu_ms"] for x in sends] for k in kinds],
        [x["cpu_ms"] for x in hb],
        [x["redis_us"] for x in hb],
        *[[rt[k][what]] if rt else [] for what in counted for k in ("plain", "client")],
        [x["per_s"] for x in disp["interactive"]],
        [x["per_s"] for x in disp["bulk"]],
        [x["cpu_us"] for x in disp["interactive"]],
        [x["cpu_us"] for x in disp["bulk"]],
    ]
    return {f.name: v for f, v in zip(FIGURES, values, strict=True)}


def cell(f: Figure, xs: list[float]) -> str:
    """The median, and the range over the rounds when there are several."""
    if not xs:
        return "n/a"
    text = f.fmt.format(statistics.median(xs))
    if len(xs) > 1:
        text += f" [{f.fmt.format(min(xs))}-{f.fmt.format(max(xs))}]"
    return text


def verdict(f: Figure, old: list[float], new: list[float]) -> str:
    """ "WORSE" only when the median moved the wrong way by more than the tolerance AND
    each tree's median lies outside the other's range over its repeats (the machine is
    shared: a single slow round says nothing); counts compare within a hundredth or so."""
    if not old or not new:
        return "n/a"
    if not f.guarded:
        return "(context)"
    a, z = statistics.median(old), statistics.median(new)
    if abs(z - a) <= max(f.tolerance * abs(a), f.absolute):
        return "same"
    inside = (len(old) > 1 and min(old) <= z <= max(old)) or (
        len(new) > 1 and min(new) <= a <= max(new)
    )
    if inside:
        return "same (noise)"
    improved = z > a if f.better == "higher" else z < a
    return "better" if improved else "WORSE"


def report(trees: list[Tree], args: argparse.Namespace, elapsed: float) -> None:
    from harness import table

    now = trees[0]
    values = [samples(t.results) for t in trees]
    scaled = "" if args.sends == 1500 else f" (the issue's 1,500 scaled down to {args.sends:,})"
    rounds_done = len(now.results["sends"])
    budget_note = (
        f" (of {args.rounds}: the {args.budget:.0f} s budget)" if rounds_done < args.rounds else ""
    )
    print(
        f"\n== hot paths: {' vs '.join(t.label for t in reversed(trees))}, one run of "
        f"{elapsed:.0f} s on this machine ({os.cpu_count()} cores, shared) ==\n"
        f"sends: {INSTANCES} worker x {PROCESSES} prefork processes per side, "
        f"{args.sends:,} sends per side and round{scaled} over {ACCOUNTS} accounts, profile "
        f"{PROFILE}, rates unlimited, {rounds_done} rounds{budget_note} alternating the trees "
        "and the order bare / plain / client; the bare baseline on the same broker, result backend "
        "and log level (WARNING); ratio = median of the rounds' paired ratios; CPU ratio = "
        "the same from CPU per send of the whole stack (workers, Redis, simulator, producer: "
        "the share of a CPU-bound machine a send takes, steadier than throughput when "
        "others load it)\n"
        f"heartbeat: the wxtasks.heartbeat task in-process over {HEARTBEAT_ACCOUNTS:,} ONLINE "
        f"accounts against the simulator, {HEARTBEAT_REPEATS} times; round trips: "
        f"{ROUND_TRIP_SENDS} sends admitted at once, a state Redis of its own; dispatch: "
        f"{DISPATCH_MESSAGES:,} parked messages over {DISPATCH_ACCOUNTS} accounts, tick() "
        f"publishing to a Redis broker, {DISPATCH_REPEATS} times per lane\n"
        "each cell: median [min-max over the repeats]"
    )
    if len(trees) == 1:
        rows = [[f.name, f.unit, cell(f, values[0][f.name])] for f in FIGURES]
        header = ["figure", "unit", now.label]
    else:
        old = trees[1]
        rows = []
        for f in FIGURES:
            a, z = values[1][f.name], values[0][f.name]
            ratio = f"{statistics.median(z) / statistics.median(a):.2f}" if any(a) and z else "n/a"
            tol = f"+-{f.tolerance:.0%}" if f.tolerance else f"+-{f.absolute}"
            rows.append(
                [
                    f.name,
                    f.unit,
                    cell(f, a),
                    cell(f, z),
                    ratio,
                    f"{f.better} ({tol})" if f.guarded else "-",
                    verdict(f, a, z),
                ]
            )
        header = ["figure", "unit", old.label, now.label, "now/then", "better is", "verdict"]
    print()
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        print(table(rows, header))
    print("\nsends per round (sends/s bare / plain / client -> ratio plain, client):")
    for t in trees:
        for i, x in enumerate(t.results["sends"]):
            b, p, c = (x[k]["per_s"] for k in ("bare", "plain", "client"))
            print(
                f"  {t.label:>20} round {i + 1:>2}: {b:5.0f} / {p:5.0f} / {c:5.0f}"
                f"  -> {p / b:.2f}, {c / b:.2f}"
            )
    print("\nwhat a send's round trips to the state Redis hold (per send):")
    for t in trees:
        for kind in ("plain", "client") if t.results["roundtrips"] else ():
            shapes = t.results["roundtrips"][kind]["shapes"]
            ordered = sorted(shapes.items(), key=lambda kv: -kv[1])
            print(f"  {t.label:>20} {kind:>6}: " + "; ".join(f"{v:.2f} x {k}" for k, v in ordered))
    print("what Redis ran per send, by command (INFO commandstats, inside Lua included):")
    for t in trees:
        for kind in ("plain", "client") if t.results["roundtrips"] else ():
            ran = t.results["roundtrips"][kind].get("ran", {})
            ordered = sorted(ran.items(), key=lambda kv: (-kv[1], kv[0]))
            print(f"  {t.label:>20} {kind:>6}: " + ", ".join(f"{k} {v:.2f}" for k, v in ordered))
    for t in trees:
        for phase, why in t.failed.items():
            print(f"n/a in {t.label}: {phase}: {why}")
    if len(trees) > 1:
        worse = [
            f.name for f in FIGURES if verdict(f, values[1][f.name], values[0][f.name]) == "WORSE"
        ]
        print(
            f"\nnone worse than {trees[1].label}"
            if not worse
            else f"\nworse than {trees[1].label}: " + "; ".join(worse)
        )


def measure(trees: list[Tree], rounds: int, deadline: float) -> None:
    """Heartbeat, round trips and dispatch first (their time varies little), then as many
    send rounds (at least ``MIN_ROUNDS``, at most ``rounds``) as end by ``deadline``
    (``time.monotonic()``): on a loaded machine a round takes twice as long. A phase that
    fails in a tree is skipped there from then on (its figures "n/a", the reason noted)."""

    def each(round_no: int) -> list[Tree]:
        return trees if round_no % 2 == 0 else list(reversed(trees))

    def say(text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def ask(t: Tree, phase: str, *args: Any) -> Any:
        if phase in t.failed:
            return None
        try:
            return t.ask(phase, *args)
        except AgentError as exc:
            lines = [x for x in str(exc).splitlines() if x.strip()]
            t.failed[phase] = lines[-1].strip() if lines else str(exc)
            say(f"{t.label}: {phase} n/a: {t.failed[phase]}")
            return None

    for t in trees:
        t.results = {
            "sends": [],
            "heartbeat": [],
            "roundtrips": {},
            "dispatch": {"interactive": [], "bulk": []},
        }
    for r in range(HEARTBEAT_REPEATS):
        for t in each(r):
            if (x := ask(t, "heartbeat")) is not None:
                t.results["heartbeat"].append(x)
                say(f"{t.label}: heartbeat: {x['cpu_ms']:.3f} ms CPU each")
    for t in trees:
        if (x := ask(t, "roundtrips")) is not None:
            t.results["roundtrips"] = x
            say(
                f"{t.label}: round trips per send: "
                + ", ".join(f"{k} {v['round_trips']:.2f}" for k, v in x.items())
            )
    for r in range(DISPATCH_REPEATS):
        for lane in ("interactive", "bulk"):
            for t in each(r):
                if (x := ask(t, "dispatch", lane)) is not None:
                    t.results["dispatch"][lane].append(x)
                    say(f"{t.label}: dispatch {lane}: {x['per_s']:,.0f} msg/s")
    began = time.monotonic()
    for r in range(rounds):
        per_round = (time.monotonic() - began) / r if r else 0.0
        if r >= MIN_ROUNDS and time.monotonic() + per_round > deadline:
            say(f"sends: {r} rounds fit the time budget (of {rounds})")
            break
        for t in each(r):
            if (x := ask(t, "sends_round", r)) is not None:
                t.results["sends"].append(x)
                say(
                    f"{t.label}: sends round {r + 1}: "
                    + ", ".join(
                        f"{k} {v['per_s']:.0f}/s (enqueued {v['enqueue_s']:.2f} s, first "
                        f"{v['first_s']:.2f} s, longest gap {v['gap_s']:.2f} s)"
                        for k, v in x.items()
                    )
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", metavar="REV", help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=8, help="send rounds per tree (8)")
    parser.add_argument("--sends", type=int, default=200, help="sends per side and round (200)")
    parser.add_argument(
        "--budget", type=float, default=160, help="seconds the whole run aims at (160)"
    )
    parser.add_argument("--markdown", action="store_true", help="the table in markdown")
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        agent(args.agent, args.sends)
        return
    started, t0 = time.perf_counter(), time.monotonic()
    logs = os.path.join(BENCH_DIR, "results")
    os.makedirs(logs, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="wxtasks-hotpaths-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        trees = [Tree(f"now {describe(ROOT)}", ROOT)]
        if args.against:
            try:
                rev = git("rev-parse", "--short", "--verify", args.against + "^{commit}")
            except subprocess.CalledProcessError:
                raise SystemExit(f"hotpaths: --against {args.against}: no such commit") from None
            path = stack.enter_context(worktree(rev, tmp))
            trees.append(Tree(rev, path))
        for i, t in enumerate(trees):
            t.python = environment(t.path, os.path.join(tmp, f"env-{i}"))
        for i, t in enumerate(trees):
            stack.callback(t.stop)
            t.start(f"tree{i}", args.sends, os.path.join(logs, f"hotpaths-agent-{i}.log"))
        try:
            for t in trees:
                up = t.read()
                if not os.path.realpath(up["wxtasks"]).startswith(os.path.realpath(t.path) + "/"):
                    raise AgentError(t.label, f"measured {up['wxtasks']}, not {t.path}")
                print(f"  {t.label}: stack up in {up['setup_s']:.0f} s", flush=True)
            measure(trees, args.rounds, t0 + args.budget - SHUTDOWN_S)
        except AgentError as exc:
            print(f"\nhotpaths: a measurement failed: {exc}", file=sys.stderr)
            print("(agent logs: bench/results/hotpaths-agent-*.log)", file=sys.stderr)
            raise SystemExit(1) from None
    report(trees, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()
