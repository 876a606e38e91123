"""How fast the `wxtasks` command answers (goal: `--help`, `accounts list --json` and
`status` in <= 0.5 s on this machine, the median).

Each command runs as a new process (`python -m wxtasks ...`) against a throwaway Redis
holding 20 accounts, N times; the median and the fastest are printed next to
`python -c pass` (the interpreter's own start) and, with `--before REV`, next to the same
command from that revision's code (its files from `git archive`, first on PYTHONPATH),
all in one run. `--importtime` adds, per command, the modules that cost most
(`python -X importtime`, cumulative, top 8).

    python bench/cli_latency.py [--runs 9] [--before main] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO

from harness import bench

COMMANDS = [
    ["--help"],
    ["accounts", "list", "--json"],
    ["status"],
    ["campaigns", "list", "--json"],
    ["gateways", "list"],
]
GOAL_S = 0.5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return took


def timings(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    run(argv, env)  # warm the page cache and the .pyc files
    return [run(argv, env) for _ in range(runs)]


def top_imports(argv: list[str], env: dict[str, str], n: int = 8) -> list[tuple[str, float]]:
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, timeout=60
    )
    rows = []
    for line in done.stderr.decode().splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = (x.strip() for x in line[12:].split("|"))
        if not name.startswith(" "):  # top-level imports only (what the command asked for)
            rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def checkout(rev: str) -> str:
    """``rev``'s files in a temporary directory (only the wxtasks package and workers)."""
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", rev, "wxtasks", "workers", "beat_schedule.py"],
        capture_output=True,
        check=True,
    ).stdout
    target = tempfile.mkdtemp(prefix=f"wxtasks-{rev}-")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--before", help="also time this git revision's code (e.g. main)")
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args(argv)
    with bench() as b:
        settings = b.settings()
        b.online_accounts(settings, 20, prefix="demo")
        env = {**os.environ, **settings.environ(), "PYTHONDONTWRITEBYTECODE": ""}
        env.pop("PYTHONPATH", None)
        before_env = None
        if args.before:
            before_env = {**env, "PYTHONPATH": checkout(args.before)}
        base = timings([sys.executable, "-c", "pass"], env, args.runs)
        print(f"{args.runs} runs each, seconds (median / fastest), this 2-core machine\n")
        header = f"{'command':<34} {'now':>13}"
        if before_env:
            header += f" {args.before:>13} {'speed-up':>9}"
        print(header + f" {'python -c pass':>15}")
        verdicts = []
        for cmd in COMMANDS:
            argv_ = [sys.executable, "-m", "wxtasks", *cmd]
            now = timings(argv_, env, args.runs)
            row = f"{'wxtasks ' + ' '.join(cmd):<34} {statistics.median(now):6.3f} / {min(now):.3f}"
            if before_env:
                old = timings(argv_, before_env, args.runs)
                row += (
                    f" {statistics.median(old):6.3f} / {min(old):.3f}"
                    f" {statistics.median(old) / statistics.median(now):8.1f}x"
                )
            row += f" {statistics.median(base):8.3f} / {min(base):.3f}"
            print(row)
            if cmd[0] in ("--help", "status") or cmd[:2] == ["accounts", "list"]:
                verdicts.append((cmd, statistics.median(now)))
            if args.importtime:
                for name, seconds in top_imports(argv_, env):
                    print(f"      {seconds * 1000:7.1f} ms  {name}")
        print()
        ok = True
        for cmd, median in verdicts:
            good = median <= GOAL_S
            ok = ok and good
            print(
                f"wxtasks {' '.join(cmd):<24} median {median:.3f} s "
                f"(goal <= {GOAL_S} s): {'OK' if good else 'MISSED'}"
            )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
