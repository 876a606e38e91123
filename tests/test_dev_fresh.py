"""`wxtasks dev --fresh` empties the stack's own Redis databases (state, broker, results)
before starting; without it, dev state persists (a real Redis, no stack started)."""

from __future__ import annotations

from click.testing import CliRunner

from tests.conftest import Simulator, settings_for
from wxtasks.cli import main
from wxtasks.dev.stack import DevStack
from wxtasks.runtime import redis_client


def test_fresh_empties_the_state_broker_and_result_databases(
    redis_url: str, simulator: Simulator, capsys: object
) -> None:
    settings = settings_for(redis_url, simulator)
    clients = [redis_client(u) for u in (settings.redis_url, settings.broker_url)]
    try:
        for c in clients:
            c.set("left-from-last-run", "1")
        DevStack(fresh=False)  # the default keeps everything
        assert all(c.exists("left-from-last-run") for c in clients)
        DevStack(fresh=True)._empty_databases(settings)
        assert not any(c.exists("left-from-last-run") for c in clients)
    finally:
        for c in clients:
            c.close()


def test_dev_offers_fresh() -> None:
    out = CliRunner().invoke(main, ["dev", "--help"])
    assert "--fresh" in out.output and "persists" in out.output
