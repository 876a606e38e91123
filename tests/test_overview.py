"""The Overview's trends: per-minute buckets in a real Redis, written where sends end and
messages are dead-lettered, sampled gauges, and the page a console process serves."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Simulator, online, settings_for
from tests.console_support import ConsoleProcess, start_console
from wxtasks.console.overview import WINDOWS, build
from wxtasks.dev.stack import Supervisor
from wxtasks.metrics import sample
from wxtasks.runtime import Runtime
from wxtasks.send.outcome import DeadLetter, Ending, SendResult, Status
from wxtasks.trends import TTL_S, TrendCache, minute_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rt(redis_url: str, simulator: Simulator) -> Iterator[Runtime]:
    runtime = Runtime(settings_for(redis_url, simulator))
    yield runtime
    runtime.redis.close()


def _end(rt: Runtime, task_id: str, app_id: str | None, status: Status) -> None:
    """A message ends through the one ending (finish.lua), as a send task's would."""
    dead = None
    if status in (Status.FAILED, Status.UNKNOWN):
        raw = {"app_id": app_id, "to_wxid": "w", "content": "hi"}
        dead = DeadLetter.of(task_id, "wxtasks.send_text", raw, status, "gateway said no")
    result = dead.result() if dead else SendResult(status, app_id, "w", task_id)
    rt.endings.end(Ending(result, dead_letter=dead), store_result=False)


def _count(rt: Runtime, minute: int, field: str, n: int) -> None:
    rt.redis.hincrby(rt.keys.trends(minute), field, n)


def test_endings_and_samples_land_in_per_minute_buckets_with_a_ttl(rt: Runtime) -> None:
    online(rt.accounts, "ov-1", "ov-2")
    rt.accounts.register("ov-3")  # IDLE
    _end(rt, "t1", "ov-1", Status.SENT)
    _end(rt, "t2", "ov-1", Status.SENT)
    _end(rt, "t3", "ov-2", Status.FAILED)  # dead-lettered
    _end(rt, "t4", None, Status.FAILED)  # unreadable: no account, no gateway
    now = time.time()
    assert sample(rt, now) is True
    assert sample(rt, now) is False  # once a minute, whoever comes first
    key = rt.keys.trends(minute_of(now))
    fields = rt.redis.hgetall(key)
    assert fields["send:sent"] == "2" and fields["send:failed"] == "2"
    assert fields["gw:default"] == "3" and fields["deadletters"] == "2"
    assert fields["state:ONLINE"] == "2" and fields["state:IDLE"] == "1"
    assert fields["backlog:interactive"] == "0" and fields["up:default"] == "1"
    assert TTL_S - 5 < rt.redis.ttl(key) <= TTL_S


def test_the_overview_draws_the_window_and_keeps_finished_minutes(rt: Runtime) -> None:
    now = time.time()
    minute = minute_of(now)
    for back, n in ((5, 3), (2, 7)):
        _count(rt, minute - back, "send:sent", n)
        _count(rt, minute - back, "gw:default", n)
    _count(rt, minute - 1, "deadletters", 1)
    rt.redis.hset(rt.keys.trends(minute - 3), mapping={"backlog:bulk": 42, "sampled": 1})
    cache = TrendCache(rt.redis, rt.keys)
    view = build(cache, WINDOWS["hour"], gateways=["default"], down=frozenset(), now=now)
    svg = {cid: svg for cid, _title, svg in view.charts}
    assert set(svg) == {"sends", "backlog", "accounts", "lateness", "deadletters"}
    assert 'data-series="sent" data-latest="0" data-total="10"' in svg["sends"]
    assert 'data-series="bulk" data-latest="42"' in svg["backlog"]
    assert 'data-total="1"' in svg["deadletters"]
    assert view.sends_total == 10 and view.deadletters_total == 1 and view.sampled
    assert [g.name for g in view.gateways] == ["default"] and view.gateways[0].up
    # a finished minute is read once; a count that lands in it later is the next process's
    _count(rt, minute - 5, "send:sent", 100)
    again = build(cache, WINDOWS["hour"], gateways=["default"], down=frozenset(), now=now)
    assert 'data-total="10"' in {c: s for c, _t, s in again.charts}["sends"]
    fresh = build(
        TrendCache(rt.redis, rt.keys), WINDOWS["day"], gateways=[], down=frozenset(), now=now
    )
    assert fresh.sends_total == 110 and len(fresh.gateways) == 1  # "default" seen in the data


@pytest.fixture
def console(rt: Runtime, supervisor: Supervisor) -> Iterator[ConsoleProcess]:
    proc = start_console(supervisor, rt.settings)
    yield proc
    supervisor.stop(proc.child, timeout_s=5)


def test_the_overview_is_the_landing_page_and_refreshes_itself(
    console: ConsoleProcess, rt: Runtime
) -> None:
    http = console.basic()
    landing = http.get(console.url + "/", allow_redirects=False, timeout=10)
    assert landing.status_code == 302 and landing.headers["Location"] == "/overview"
    page = http.get(console.url + "/overview", timeout=10)
    assert page.status_code == 200
    assert page.text.count('<svg class="chart"') == 5
    assert 'hx-trigger="every 10s"' in page.text and "part=charts" in page.text
    assert "No gauge sample yet" in page.text
    sample(rt)
    part = http.get(console.url + "/overview?window=day&part=charts", timeout=10)
    assert part.status_code == 200 and "<html" not in part.text
    assert "No gauge sample yet" not in part.text and 'data-gateway="default"' in part.text
    assert http.get(console.url + "/overview?window=week", timeout=10).status_code == 400
    icon = http.get(console.url + "/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.headers["Content-Type"].startswith("image/")


def _exported_metrics(rt: Runtime) -> set[str]:
    from prometheus_client import CollectorRegistry, generate_latest

    from wxtasks.metrics import RedisCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(rt))
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_every_metric_the_grafana_dashboard_queries_is_exported(rt: Runtime) -> None:
    dashboard = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [
        t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t
    ]
    assert len(exprs) >= 6
    queried = {m for e in exprs for m in re.findall(r"\b(wxtasks_[a-z_]+)", e)}
    exported = _exported_metrics(rt)
    assert queried and queried <= exported, queried - exported


def test_the_monitoring_profile_runs_prometheus_and_grafana_on_the_metrics() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert "metrics:9808" in targets
    mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana-dashboard.json" in mounts
    # every file the services mount is in the repository
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
