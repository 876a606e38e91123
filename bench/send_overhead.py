"""Send overhead: the full wxtasks pipeline vs a bare Celery task that only POSTs.

Both run on the same broker and result backend (the bench Redis), the same Celery
settings (``wxtasks.celeryconf.configure``: acks_late, prefetch 1, result_extended, ...)
and log level (WARNING), against the same simulator; limits set so high they never bind.
Throughput = messages / (last one at the gateway - first enqueue); bare and full runs
alternate (bare, full, bare, full, ... 5 rounds: the machine is shared and noisy) and
the ratio is of the medians; worker and Redis server CPU per message are shown beside.
Goal >= 0.9.

Two set-ups, in one invocation:

(a) one worker instance x 4 prefork processes, 1,500 messages over 20 accounts, v1 profile
    (an independent run measured 0.75-0.82 here for the pipeline before the outbox);
(b) bench/send_pipeline.py's own: 2 instances x 2 processes, 3,000 messages over 50
    accounts, videosapi profile (it reported 0.89-0.94).

``--profile``: py-spy samples every process of the worker instance(s) during one bare and
one full run of each set-up and prints where the CPU goes, per message, by area.

    python bench/send_overhead.py [--quick] [--profile] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from celery import Celery
from harness import BENCH_DIR, Bench, SendLog, bench, cpu_seconds, redis_cpu, table

from wxtasks.runtime import redis_client

HIGH = dict(
    rate_per_second=100_000,
    burst=100_000,
    account_rate_per_second=100_000,
    account_burst=100_000,
)


@dataclass(frozen=True)
class Setup:
    name: str
    instances: int
    concurrency: int
    messages: int
    accounts: int
    profile: str


SETUPS = (
    Setup("a", 1, 4, 1500, 20, "v1"),
    Setup("b", 2, 2, 3000, 50, "videosapi"),
)


def enqueue(app: Celery, task: str, messages: list[tuple[str, str, str]]) -> None:
    with app.producer_or_acquire() as prod:
        for a, t, c in messages:
            app.send_task(
                task, queue="send", producer=prod, kwargs={"app_id": a, "to_wxid": t, "content": c}
            )


def wait_sends(log: SendLog, n: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(log.poll()) >= n:
            break
        time.sleep(0.2)
    return log.poll()


class Profiler:
    """py-spy over a worker instance's processes (main + pool), raw collapsed stacks."""

    def __init__(self, pids: list[int], path: str) -> None:
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        self.path = path
        opts = ["--subprocesses", "--format", "raw", "--rate", "200", "--nonblocking"]
        self.procs = [
            subprocess.Popen(
                [exe, "record", "--pid", str(pid), *opts, "--output", f"{path}.{i}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i, pid in enumerate(pids)
        ]
        time.sleep(1.0)  # attached

    def stop(self) -> Counter[str]:
        import signal

        for p in self.procs:
            p.send_signal(signal.SIGINT)
        stacks: Counter[str] = Counter()
        for i, p in enumerate(self.procs):
            p.wait(30)
            try:
                with open(f"{self.path}.{i}") as f:
                    for line in f:
                        stack, _, n = line.rstrip().rpartition(" ")
                        if stack and n.isdigit():  # skip py-spy's own notes
                            stacks[stack] += int(n)
            except FileNotFoundError:
                pass
        return stacks


AREAS = (  # first match of the innermost frames wins, checked from the leaf up
    ("idle (waiting for work / I/O poll)", ("select", "poll (", "epoll", "_wait_for", "sleep")),
    ("wxtasks: Lua admit/finish round trips", ("sending.py", "scripts.py")),
    ("wxtasks: other", ("wxtasks/",)),
    ("redis-py (client, parsing)", ("redis/",)),
    ("requests / urllib3 / http.client", ("requests/", "urllib3/", "http/client", "socket")),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("kombu (broker transport)", ("kombu/",)),
    ("celery: result backend", ("backends/",)),
    ("celery: worker / trace / billiard", ("celery/", "billiard/")),
)


def by_area(stacks: Counter[str]) -> Counter[str]:
    """Samples per area: the innermost frame that belongs to a known area decides (idle
    first: a process blocked in select is idle whoever called it)."""
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        frames = stack.split(";")
        area = "other"
        leaf = frames[-1]
        if any(k in leaf for k in AREAS[0][1]):
            area = AREAS[0][0]
        else:
            for frame in reversed(frames):
                hit = next(
                    (name for name, keys in AREAS[1:] if any(k in frame for k in keys)), None
                )
                if hit:
                    area = hit
                    break
        out[area] += n
    return out


def top_functions(stacks: Counter[str], wanted: str, k: int = 12) -> list[tuple[str, int]]:
    """Inclusive samples of frames containing ``wanted`` (each counted once per stack)."""
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        seen = set()
        for frame in stack.split(";"):
            if wanted in frame:
                name = frame.split(" (")[0] + " (" + frame.split("/")[-1]
                if name not in seen:
                    seen.add(name)
                    out[name] += n
    return out.most_common(k)


def run_setup(b: Bench, s: Setup, rounds: int, scale: float, profile: bool) -> dict[str, Any]:
    n = int(s.messages * scale)
    settings = b.settings(**HIGH)
    out: dict[str, Any] = {
        "setup": s,
        "n": n,
        "bare": [],
        "ours": [],
        "cpu": {},
        "rcpu": {},
        "stacks": {},
    }
    rclient = redis_client(b.redis.url)
    for rnd in range(rounds):
        for kind, app, task in (
            ("bare", "baseline_app", "bench.post"),
            ("ours", "workers", "wxtasks.send_text"),
        ):
            b.reset()
            accounts = b.online_accounts(settings, s.accounts)
            messages = [(accounts[i % s.accounts], f"wxid_{i}", f"overhead {i}") for i in range(n)]
            workers = b.workers(settings, s.instances, s.concurrency, app=app)
            producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
            log = SendLog(b)
            enqueue(producer, task, [(a, t, c + " warm") for a, t, c in messages[:200]])
            wait_sends(log, 200, 60)
            time.sleep(0.5)
            log.poll()
            before = len(log)
            pids = [w.process.pid for w in workers]
            prof = (
                Profiler(pids, os.path.join(BENCH_DIR, "results", f"pyspy-{s.name}-{kind}"))
                if profile and rnd == 0
                else None
            )
            cpu0, rcpu0 = cpu_seconds(pids), redis_cpu(rclient)
            started = time.time()
            enqueue(producer, task, messages)
            sends = wait_sends(log, before + n, 300)[before:]
            elapsed = max(x["at"] for x in sends) - started
            cpu = cpu_seconds(pids) - cpu0
            rcpu = redis_cpu(rclient) - rcpu0
            out["rcpu"].setdefault(kind, []).append(rcpu / len(sends) * 1000)
            if prof is not None:
                out["stacks"][kind] = prof.stop()
            out[kind].append(len(sends) / elapsed)
            out["cpu"].setdefault(kind, []).append(cpu / len(sends) * 1000)
            producer.close()
            b.stop_workers(workers)
            print(
                f"  ({s.name}) round {rnd + 1} {kind}: {len(sends)} in {elapsed:.2f} s = "
                f"{len(sends) / elapsed:.0f}/s, worker CPU {cpu / len(sends) * 1000:.2f} ms/msg, "
                f"Redis CPU {rcpu / len(sends) * 1000:.2f} ms/msg",
                flush=True,
            )
    return out


def micro(n: int) -> list[list[str]]:
    """The wxtasks-only steps of one send, in-process against a throwaway Redis: client CPU
    and Redis server CPU per call of each step (the gateway call and Celery's own work
    are the same for both tasks and left out)."""
    from wxtasks.accounts.machine import Event
    from wxtasks.config import Settings
    from wxtasks.dev.redis_server import RedisServer
    from wxtasks.gateway.client import SendReceipt
    from wxtasks.runtime import Runtime
    from wxtasks.send.gates import Admission, Lane
    from wxtasks.send.outcome import Ending, SendResult, Status
    from wxtasks.send.pipeline import Message
    from wxtasks.send.policy import decide

    rows = []
    with RedisServer() as server:
        settings = Settings.from_env(
            {}, redis_url=server.url, broker_url=server.url[:-1] + "1", **HIGH
        )
        rt = Runtime(settings)
        apps = [f"acct-{i:02d}" for i in range(20)]
        for a in apps:
            rt.accounts.register(a)
            rt.accounts.transition(a, Event.LOGIN_SUCCEEDED)
        pipe = rt.pipeline
        raw = [
            {"app_id": apps[i % 20], "to_wxid": f"wxid_{i}", "content": f"overhead {i}"}
            for i in range(n)
        ]
        state: dict[str, Any] = {}

        def parse() -> None:
            state["msgs"] = [Message.parse("text", r) for r in raw]
            state["tickets"] = [
                pipe.ticket(f"task-{i}", Lane.INTERACTIVE, time.time()) for i in range(n)
            ]

        def admit() -> None:
            state["adm"] = [
                pipe.admit(m, t) for m, t in zip(state["msgs"], state["tickets"], strict=True)
            ]

        def decide_all() -> None:
            now = time.time()
            for t, a in zip(state["tickets"], state["adm"], strict=True):
                assert isinstance(a, Admission)
                decide(t, a, now)

        def finish() -> None:
            for i, (m, t) in enumerate(zip(state["msgs"], state["tickets"], strict=True)):
                receipt = SendReceipt(m.to_wxid, str(i), str(7 * 10**18 + i), int(time.time()))
                result = SendResult.from_ids(
                    Status.SENT, m.app_id, m.to_wxid, t.task_id, receipt.as_dict()
                )
                rt.endings.end(Ending(result, claim_key=pipe.claim_key(m)), store_result=False)

        for name, step in (
            ("validate + digest + ticket", parse),
            ("admit (admit.lua, 1 round trip)", admit),
            ("decide() x2", decide_all),
            ("end (finish.lua: every record, 1 round trip)", finish),
        ):
            c0, r0, w0 = time.process_time(), redis_cpu(rt.redis), time.perf_counter()
            step()
            c, r, w = (
                time.process_time() - c0,
                redis_cpu(rt.redis) - r0,
                time.perf_counter() - w0,
            )
            rows.append([name, f"{c / n * 1e6:.0f}", f"{r / n * 1e6:.0f}", f"{w / n * 1e6:.0f}"])
        rt.redis.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", choices=["a", "b"])
    parser.add_argument("--micro", action="store_true", help="only the in-process step costs")
    args = parser.parse_args()
    if args.micro:
        n = 2000 if args.quick else 10000
        print(f"\n== wxtasks' own steps of one send, in-process, {n:,} messages ==")
        print(table(micro(n), ["step", "client CPU us", "Redis CPU us", "wall us"]))
        return
    rounds = args.rounds or (1 if args.quick else 5)
    scale = 0.2 if args.quick else 1.0
    results = []
    for s in SETUPS:
        if args.only and s.name != args.only:
            continue
        with bench(s.profile) as b:
            results.append(run_setup(b, s, rounds, scale, args.profile))

    print("\n== send overhead: full pipeline vs a bare Celery task that only POSTs ==")
    rows = []
    for r in results:
        s = r["setup"]
        bare, ours = statistics.median(r["bare"]), statistics.median(r["ours"])
        ratio = ours / bare
        rows.append(
            [
                f"({s.name}) {s.instances} x {s.concurrency} procs, {r['n']} msgs, "
                f"{s.accounts} accts, {s.profile}",
                " ".join(f"{x:.0f}" for x in r["bare"]),
                " ".join(f"{x:.0f}" for x in r["ours"]),
                f"{statistics.median(r['cpu']['bare']):.2f}",
                f"{statistics.median(r['cpu']['ours']):.2f}",
                f"{statistics.median(r['rcpu']['bare']):.2f}",
                f"{statistics.median(r['rcpu']['ours']):.2f}",
                f"{ratio:.2f}",
                "PASS" if ratio >= 0.9 else "FAIL",
            ]
        )
    print(
        table(
            rows,
            [
                "set-up",
                "bare /s",
                "wxtasks /s",
                "worker ms/msg bare",
                "worker ms/msg wxtasks",
                "Redis ms/msg bare",
                "Redis ms/msg wxtasks",
                "ratio",
                "goal >= 0.9",
            ],
        )
    )
    for r in results:
        if not r["stacks"]:
            continue
        s = r["setup"]
        print(f"\n-- ({s.name}) where the worker processes' time goes (py-spy, per message) --")
        areas = {k: by_area(v) for k, v in r["stacks"].items()}
        names = sorted(set(areas["bare"]) | set(areas["ours"]), key=lambda a: -areas["ours"][a])
        n = r["n"]
        per = 1000 / 200 / n  # ms per sample (200 Hz) per message
        print(
            table(
                [
                    [a, f"{areas['bare'][a] * per:.2f}", f"{areas['ours'][a] * per:.2f}"]
                    for a in names
                ],
                ["area", "bare ms/msg", "wxtasks ms/msg"],
            )
        )
        print("wxtasks frames, inclusive ms/msg (busy samples only):")
        for name, samples in top_functions(r["stacks"]["ours"], "wxtasks/"):
            print(f"   {samples * per:6.3f}  {name}")


if __name__ == "__main__":
    main()
