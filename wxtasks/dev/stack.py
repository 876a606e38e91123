"""Run the whole stack as child processes: ``wxtasks dev``, tests and benchmarks.

``Supervisor`` starts each child in its own process group (so a terminal's Ctrl-C reaches
only the supervisor), asks the kernel to SIGTERM it if the supervisor dies, and on stop
terminates every group it started, then kills what is left: no process stays behind.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import requests

from wxtasks.config import Settings, inherited_environ, redact_url
from wxtasks.dev.redis_server import RedisServer
from wxtasks.runtime import Runtime, redis_answers

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Supervisor:
    log_dir: str | None = None
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdout: IO[Any] | int | None = None,
    ) -> Child:
        log_path = None
        out: IO[Any] | int | None = stdout
        if out is None and self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            log_path = os.path.join(self.log_dir, f"{name}.log")
            out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            list(args),
            env=inherited_environ(env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_child_setup,
        )
        if log_path and hasattr(out, "close"):
            out.close()  # type: ignore[union-attr]
        child = Child(name, list(args), process, log_path, dict(env or {}))
        self.children.append(child)
        return child

    def restart(self, child: Child) -> Child:
        """Start a dead child again with the same command and environment."""
        self.stop(child, timeout_s=1)  # reap it and anything its group left
        self.children.remove(child)
        fresh = self.start(child.name, child.args, child.env)
        fresh.restarts = child.restarts + 1
        return fresh

    def stop(self, child: Child, *, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        if child.alive:
            _signal_group(child.process.pid, sig)
            try:
                child.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(child.process.pid, signal.SIGKILL)  # anything the group left behind
        if child.process.poll() is None:
            child.process.wait(5)

    def kill(self, child: Child) -> None:
        """SIGKILL the child's main process only (a crash, not a shutdown)."""
        child.process.kill()
        child.process.wait(10)

    def stop_many(self, children: Sequence[Child], timeout_s: float = 15.0) -> None:
        """Stop ``children`` together: SIGTERM to every group first, so that their
        shutdowns overlap, then wait for each (``timeout_s`` in all) and kill what is left."""
        for child in children:
            if child.alive:
                _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(child.process.pid, signal.SIGKILL)
            if child.process.poll() is None:
                child.process.wait(5)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        self.stop_many(list(reversed(self.children)), timeout_s)
        self.children.clear()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


#: dispatcher processes a deployment runs (docker-compose's replicas; tests and dev too)
DISPATCHERS = 2


def dispatcher_cmd() -> list[str]:
    return [sys.executable, "-m", "wxtasks", "dispatcher"]


def celery_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def worker_args(queues: str, name: str, concurrency: int, *extra: str) -> list[str]:
    return celery_cmd(
        "worker",
        "-Q",
        queues,
        "-n",
        f"{name}@%h",
        "-c",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "-l",
        "INFO",
        *extra,
    )


def wait_until(
    predicate: Any, timeout_s: float, interval_s: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


#: the demo account that needs a QR scan (the simulator has no session for it)
DEMO_QR = "demo-qr"


class DevStack:
    """``wxtasks dev``: everything on one machine, on an embedded default."""

    #: a child that keeps dying is given up on (and the stack stops) after this many
    max_restarts = 5

    def __init__(
        self,
        *,
        n_accounts: int = 20,
        flower_port: int = 5555,
        send_concurrency: int = 2,
        control_concurrency: int = 2,
        simulator_port: int = 2531,
        metrics_port: int = 9808,
        callback_port: int = 8088,
        console_port: int = 8000,
        n_gateways: int = 1,
        fresh: bool = False,
    ) -> None:
        self.n_accounts = n_accounts
        #: empty the stack's own Redis databases (state, broker, results) before starting
        self.fresh = fresh
        self.n_gateways = n_gateways
        #: gateway name -> the variable holding its token (``wxtasks dev --gateways N``)
        self.gateway_tokens: dict[str, str] = {}
        self.metrics_port = metrics_port
        self.callback_port = callback_port
        self.console_port = console_port
        self.flower_port = flower_port
        self.send_concurrency = send_concurrency
        self.control_concurrency = control_concurrency
        self.simulator_port = simulator_port
        self.supervisor = Supervisor(log_dir=os.path.join(os.getcwd(), ".wxtasks", "logs"))
        self.redis_server: RedisServer | None = None

    def say(self, text: str) -> None:
        print(f"[wxtasks dev] {text}", flush=True)

    def run(self) -> None:
        stopping = False

        def on_signal(signum: int, _frame: Any) -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_signal)
        try:
            self.start()
            while True:
                self._restart_the_dead()
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            self.say("stopping ...")
            self.supervisor.stop_all()
            if self.redis_server is not None:
                self.redis_server.cleanup()
            self.say("stopped")

    def _restart_the_dead(self) -> None:
        """A crashed process (a killed worker, say) is started again, a few times."""
        server = self.redis_server
        if server is not None and (server.process is None or server.process.poll() is not None):
            server.start()  # same port and data dir: the append-only file brings it all back
            self.say(f"Redis exited; restarted it on port {server.port}")
        for child in list(self.supervisor.children):
            if child.alive:
                continue
            code = child.process.returncode
            if child.restarts >= self.max_restarts:
                self.say(f"{child.name} exited with {code} again; see {child.log_path}")
                raise KeyboardInterrupt
            fresh = self.supervisor.restart(child)
            self.say(
                f"{child.name} exited with {code}; restarted it "
                f"({fresh.restarts}/{self.max_restarts})"
            )

    def start(self) -> None:
        configured = Settings.configured()
        settings = Settings.from_env()
        redis_url = settings.redis_url
        if redis_answers(redis_url):
            self.say(f"Redis: using {redact_url(redis_url)}")
        else:
            parts = urlsplit(redis_url)
            data_dir = os.path.join(os.getcwd(), ".wxtasks", "redis")
            os.makedirs(data_dir, exist_ok=True)
            self.redis_server = RedisServer(
                parts.port or 6379,
                host=parts.hostname or "127.0.0.1",
                appendonly=True,
                password=parts.password,
                data_dir=data_dir,
            ).start()
            self.say(
                f"Redis: started the embedded redis-server on {parts.hostname}:"
                f"{self.redis_server.port} (data in {data_dir})"
            )
        if self.fresh:
            self._empty_databases(settings)
        own_simulator = "WECHATAPI_BASE_URL" not in configured
        token_env: dict[str, str] = {}
        if own_simulator:
            base_url = f"http://127.0.0.1:{self.simulator_port}"
            settings = settings.replace(gateway_base_url=base_url)
            args = [
                sys.executable,
                "-m",
                "wxtasks",
                "simulator",
                "--port",
                str(self.simulator_port),
            ]
            if self.n_gateways > 1:
                # gateway i accepts <prefix><i>; each sim-i names its own token variable
                prefix = f"dev-{secrets.token_hex(4)}-"
                args += ["--gateways", str(self.n_gateways), "--token-prefix", prefix]
                for i in range(1, self.n_gateways + 1):
                    var = f"WXTASKS_DEV_GATEWAY_TOKEN_{i}"
                    token_env[var] = f"{prefix}{i}"
                    self.gateway_tokens[f"sim-{i}"] = var
                # the environment's gateway is simulated gateway 1
                settings = settings.replace(gateway_token=f"{prefix}1")
            self.supervisor.start("simulator", args, settings.environ())
            last = self.simulator_port + self.n_gateways - 1
            wait_until(
                lambda: _http_answers(f"http://127.0.0.1:{last}/admin/stats"), 15, what="simulator"
            )
            if self.n_gateways > 1:
                self.say(
                    f"gateways: {self.n_gateways} simulated, sim-1 .. sim-{self.n_gateways} on "
                    f"ports {self.simulator_port} .. {last} (admin API under /admin on each)"
                )
            else:
                self.say(f"gateway: simulator at {base_url} (admin API under /admin)")
        else:
            self.say(f"gateway: {settings.gateway_base_url}")
        # the callback receiver's secret: the operator's (checked now: the receiver would
        # refuse it), or one for this run
        if settings.callback_secret:
            from wxtasks.inbound.receiver import check_secret

            check_secret(settings.callback_secret)
        else:
            settings = settings.replace(callback_secret=secrets.token_urlsafe(24))
        self._register_gateways(settings)
        env = {**settings.environ(), **token_env, "FLOWER_UNAUTHENTICATED_API": "true"}
        sup = self.supervisor
        sup.start("worker-send", worker_args("send", "send", self.send_concurrency), env)
        sup.start(
            "worker-control", worker_args("control", "control", self.control_concurrency), env
        )
        sup.start("beat", celery_cmd("beat", "-l", "INFO"), env)
        for i in range(DISPATCHERS):
            sup.start(f"dispatcher-{i + 1}", dispatcher_cmd(), env)
        # Flower asks the workers what they are once, at start: start it after they answer
        self._wait_workers(settings, 2)
        sup.start(
            "flower", celery_cmd("flower", f"--port={self.flower_port}", "--address=127.0.0.1"), env
        )
        sup.start(
            "metrics",
            [sys.executable, "-m", "wxtasks", "metrics", "--port", str(self.metrics_port)],
            env,
        )
        sup.start(
            "callbacks",
            [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(self.callback_port)],
            env,
        )
        console_login = ""
        if not (settings.console_users or settings.console_users_file):
            password = secrets.token_urlsafe(12)  # a dev login for this run, never a default
            env["WXTASKS_CONSOLE_USERS"] = f"admin:{password}:admin"
            console_login = f" (user admin, role admin, password {password})"
        flower = f"--flower-url=http://127.0.0.1:{self.flower_port}"
        sup.start(
            "console",
            [sys.executable, "-m", "wxtasks", "console", "--port", str(self.console_port), flower],
            env,
        )
        receiver = f"http://127.0.0.1:{self.callback_port}"
        if own_simulator:  # have it push events to the receiver
            from wxtasks.gateway import GatewayClient
            from wxtasks.inbound.receiver import callback_url

            wait_until(
                lambda: _http_answers(receiver + "/callback/x", ok=(403, 405)),
                15,
                what="the callback receiver",
            )
            if self.n_gateways > 1:
                from wxtasks.gateway.registry import make_callback_secret

                registry = Runtime(settings).gateways
                for name, var in self.gateway_tokens.items():
                    g = registry.get(name)
                    token = token_env[var]  # known here; workers read it from their env
                    secret = make_callback_secret()  # stored hashed: a new one each run
                    GatewayClient(g.base_url, token, g.profile).set_callback(
                        callback_url(receiver, settings, secret), token
                    )
                    registry.set_callback_secret(name, secret)
            else:
                GatewayClient.from_settings(settings).set_callback(
                    callback_url(receiver, settings), settings.gateway_token
                )
        self._demo_accounts(settings)
        if own_simulator:
            self._demo_qr(settings)
        from wxtasks.inbound.receiver import callback_url

        # the URL a gateway posts to, with this run's secret (one per gateway with --gateways)
        self.say(f"callbacks: POST {callback_url(receiver, settings)}")
        self.say(f"metrics: http://127.0.0.1:{self.metrics_port}/metrics")
        self.say(
            f"Flower: http://127.0.0.1:{self.flower_port}  "
            f"(REST: POST /api/task/send-task/wxtasks.send_text)"
        )
        self.say(f"console: http://127.0.0.1:{self.console_port}{console_login}")
        self.say(f"logs: {sup.log_dir}")
        self.say(
            "try, in another terminal:  wxtasks status   wxtasks accounts list   "
            "wxtasks send demo-01 wxid_friend hello"
        )
        self.say("Ctrl-C stops everything")

    def _empty_databases(self, settings: Settings) -> None:
        """``--fresh``: FLUSHDB each Redis database the stack uses (state, broker,
        results); without it, dev state (accounts, campaigns, trends) persists."""
        from wxtasks.runtime import redis_client

        emptied = []
        for url in dict.fromkeys(
            (settings.redis_url, settings.broker_url, settings.result_backend_url)
        ):
            if urlsplit(url).scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
                continue  # a RabbitMQ broker holds no dev state of ours
            client = redis_client(url)
            try:
                client.flushdb()
            finally:
                client.close()
            emptied.append(redact_url(url))
        self.say(f"--fresh: emptied {', '.join(emptied)}")

    def _demo_qr(self, settings: Settings) -> None:
        """``demo-qr``: an account the simulator has no session for, so it needs a QR
        login; the console shows its code with a "simulate scan" button."""
        rt = Runtime(settings)
        base = rt.fleet.spec(self.gateway_of_demo(0) or "default").base_url
        requests.post(
            f"{base}/admin/accounts", json={"appId": DEMO_QR, "online": False}, timeout=5
        ).raise_for_status()
        rt.accounts.remove(DEMO_QR)  # each run starts it IDLE, waiting for a scan
        rt.accounts.register(
            DEMO_QR,
            note="needs a QR scan: log in from the console",
            pacing={"quiet_hours": "", "warmup_s": "0"},
            gateway=self.gateway_of_demo(0),
        )
        self.say(
            f"{DEMO_QR}: IDLE, needs a QR login: console -> Accounts -> {DEMO_QR} -> log in, "
            "then 'simulate scan'"
        )

    def _wait_workers(self, settings: Settings, n: int) -> None:
        control = Runtime(settings).celery.control
        try:
            wait_until(
                lambda: len(control.ping(timeout=0.5) or []) >= n, 90, 0.5, f"{n} workers to answer"
            )
        except TimeoutError:
            self.say(f"workers did not all answer within 90 s; see {self.supervisor.log_dir}")

    def _register_gateways(self, settings: Settings) -> None:
        """``--gateways N``: sim-1 .. sim-N in the registry (kept up to date on restarts)."""
        if not self.gateway_tokens:
            return
        registry = Runtime(settings).gateways
        for i, (name, var) in enumerate(self.gateway_tokens.items()):
            url = f"http://127.0.0.1:{self.simulator_port + i}"
            if registry.exists(name):
                registry.update(name, base_url=url, profile=settings.gateway_profile, token_env=var)
            else:
                registry.add(
                    name,
                    base_url=url,
                    profile=settings.gateway_profile,
                    token_env=var,
                    note="wxtasks dev simulator",
                )

    def gateway_of_demo(self, index: int) -> str | None:
        """The gateway of demo account ``index`` (0-based): 2 per gateway, in order."""
        if not self.gateway_tokens:
            return None
        per = max(2, -(-self.n_accounts // len(self.gateway_tokens)))
        return f"sim-{min(index // per, len(self.gateway_tokens) - 1) + 1}"

    def _demo_accounts(self, settings: Settings) -> None:
        from wxtasks.accounts.lifecycle import LOGIN_TASK
        from wxtasks.accounts.machine import State

        rt = Runtime(settings)
        store = rt.accounts
        ids = [f"demo-{i:02d}" for i in range(1, self.n_accounts + 1)]
        for index, app_id in enumerate(ids):
            # simulated accounts: no warm-up, no quiet hours, so the demo works at any hour
            account, _ = store.register(
                app_id,
                note="demo account",
                pacing={"quiet_hours": "", "warmup_s": "0"},
                gateway=self.gateway_of_demo(index),
            )
            if account.state is State.IDLE:
                rt.enqueue(LOGIN_TASK, {"app_id": app_id})
        try:
            wait_until(
                lambda: all(a.state is State.ONLINE for a in store.get_many(ids)),
                60,
                0.5,
                "demo accounts to come ONLINE",
            )
            self.say(f"{len(ids)} demo accounts ONLINE ({ids[0]} .. {ids[-1]})")
        except TimeoutError:
            counts = store.count_by_state()
            self.say(f"demo accounts not all ONLINE yet: {counts}")


def _http_answers(url: str, ok: tuple[int, ...] = (200,)) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code in ok
    except requests.RequestException:
        return False
