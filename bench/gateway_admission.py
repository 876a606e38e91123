"""Admission cost with the gateway registry vs without it, measured side by side.

"Without": ``admit.lua`` as it was before the registry (``bench/admit_before_fleet.lua``,
copied from the commit before: account + global bucket), called with its own arguments
and its reply read as the pre-registry ``SendPipeline.admit`` read it.
"With": today's ``SendPipeline.admit`` (the account's gateway guessed in the process,
checked in the script, a third bucket), accounts spread over 50 registered gateways.
Both admit distinct messages for 100 ONLINE accounts with limits far above the load, so
every call is an admission. Goal: with / without >= 0.95 (calls per second).

    python bench/gateway_admission.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import time

from harness import BENCH_DIR

from wxtasks.accounts.machine import Event
from wxtasks.accounts.store import AccountStore
from wxtasks.config import Settings
from wxtasks.dev.redis_server import RedisServer
from wxtasks.gateway import GatewayClient
from wxtasks.gateway.registry import GatewayRegistry
from wxtasks.runtime import redis_client
from wxtasks.send.pipeline import Message, SendPipeline, _admission
from wxtasks.send.policy import Lane

N_ACCOUNTS, N_GATEWAYS = 100, 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    with RedisServer() as server:
        settings = Settings.from_env(
            {},
            redis_url=server.url,
            rate_per_second=1e6,
            burst=1_000_000,
            account_rate_per_second=1e6,
            account_burst=1_000_000,
            dedup_ttl_s=60,
        )
        r = redis_client(server.url)
        store = AccountStore(r, settings)
        registry = GatewayRegistry(r, settings)
        for g in range(N_GATEWAYS):
            registry.add(f"gw-{g}", base_url="http://h", profile="v1", token_env="T", rate=1e6,
                         burst=1_000_000)  # fmt: skip
        ids = [f"acct-{i:03d}" for i in range(N_ACCOUNTS)]
        for i, app_id in enumerate(ids):
            store.register(app_id, gateway=f"gw-{i % N_GATEWAYS}")
            store.transition(app_id, Event.LOGIN_SUCCEEDED)
        pipe = SendPipeline(r, settings, GatewayClient("http://127.0.0.1:1", "t"))
        lua = os.path.join(os.path.dirname(BENCH_DIR), "wxtasks", "lua")
        with (
            open(os.path.join(lua, "lib", "gcra.lua")) as lib,
            open(os.path.join(BENCH_DIR, "admit_before_fleet.lua")) as old,
        ):
            before = r.register_script(lib.read() + "\n" + old.read())
        counter = [0]

        def with_registry() -> None:
            n = counter[0] = counter[0] + 1
            app_id = ids[n % N_ACCOUNTS]
            m = Message.parse("text", {"app_id": app_id, "to_wxid": "w", "content": f"c{n}"})
            pipe.admit(m, pipe.ticket(f"w{n}", Lane.INTERACTIVE, time.time()))

        def without() -> None:
            n = counter[0] = counter[0] + 1
            app_id = ids[n % N_ACCOUNTS]
            m = Message.parse("text", {"app_id": app_id, "to_wxid": "w", "content": f"c{n}"})
            k = pipe.keys
            reply = before(
                keys=[k.account(app_id), k.account_bucket(app_id), k.global_bucket,
                      pipe.claim_key(m), k.outbox_lane(app_id, "interactive"),
                      k.seen(app_id, f"o{n}"), k.campaigns_stopped],
                args=[f"o{n}", 60, 1e6, 1_000_000, 1e6, 1_000_000, "", repr(time.time() * 1000),
                      600_000, 0, "1", "0", 25_000, ""],
            )  # fmt: skip
            _admission(reply)  # as the pre-registry SendPipeline.admit returned it

        def rate(fn: object) -> float:
            assert callable(fn)
            for _ in range(200):  # warm up (script load, connection, the gateway guesses)
                fn()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < opts.seconds:
                fn()
                n += 1
            return n / (time.perf_counter() - t0)

        ratios = []
        for i in range(opts.rounds):  # interleaved, so machine noise hits both alike
            a, b = rate(without), rate(with_registry)
            ratios.append(b / a)
            print(f"round {i + 1}: without {a:,.0f}/s  with registry {b:,.0f}/s  ratio {b / a:.3f}")
        ratios.sort()
        print(f"admission with the registry / without: median {ratios[len(ratios) // 2]:.3f} "
              "(goal >= 0.95)")  # fmt: skip
        r.close()


if __name__ == "__main__":
    main()
