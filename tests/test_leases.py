"""Shard leases (wxtasks.send.leases): dispatchers split the shards evenly, a joining or
leaving one moves only the shards that must move, and no shard is ever held twice."""

from __future__ import annotations

import redis

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts
from wxtasks.send.leases import ShardLeases, share


def leases(r: redis.Redis, me: str) -> ShardLeases:
    return ShardLeases(r, Keys("wx"), Scripts(r), me)


def cycle(*ds: ShardLeases, rounds: int = 3) -> None:
    for _ in range(rounds):
        for d in ds:
            d.cycle()


def holders(r: redis.Redis) -> dict[int, str]:
    keys = Keys("wx")
    return {s: str(r.get(keys.shard_lease(s))).split()[0] for s in range(keys.shards)}


def test_the_shares_are_even_and_add_up() -> None:
    for n in range(1, 10):
        members = [f"d{i}" for i in range(n)]
        shares = [share(members, m, 64) for m in members]
        assert sum(shares) == 64 and max(shares) - min(shares) <= 1
    assert share(["a", "b"], "c", 64) == 0


def test_dispatchers_split_the_shards_and_a_join_moves_only_what_must(
    redis_url: str, r: redis.Redis
) -> None:
    a, b = leases(r, "a"), leases(r, "b")
    cycle(a, b)
    assert (len(a.held), len(b.held)) == (32, 32)
    assert set(holders(r).values()) == {"a", "b"}  # every shard held, by its own holder
    a_before, b_before = set(a.held), set(b.held)
    c = leases(r, "c")
    cycle(a, b, c)
    assert sorted(len(d.held) for d in (a, b, c)) == [21, 21, 22]
    assert set(a.held) <= a_before and set(b.held) <= b_before  # nothing moved between them
    owners = holders(r)
    for d in (a, b, c):
        assert {s for s, who in owners.items() if who == d.me} == set(d.held)


def test_a_dispatcher_that_leaves_hands_its_shards_to_the_others(
    redis_url: str, r: redis.Redis
) -> None:
    a, b, c = leases(r, "a"), leases(r, "b"), leases(r, "c")
    cycle(a, b, c)
    c.leave()
    cycle(a, b)
    assert (len(a.held), len(b.held), len(c.held)) == (32, 32, 0)
    assert set(holders(r).values()) == {"a", "b"}
