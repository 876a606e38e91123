"""Each shard's copies of the three fleet-wide sets a dispatch call reads.

A dispatch call touches only its shard's keys (one hash slot, so the state store can move
to Redis Cluster), yet it must know which campaigns are paused or cancelled, which
gateways are down, and which campaigns keep their own spacing. Those live fleet-wide
(``wx:campaigns:stopped``, ``wx:gateways:down``, ``wx:campaigns:jitter``: admission and
operators read them there) and are copied into every shard by :func:`refresh`.

Whoever changes one of them (a campaign's pause, resume, cancel or end; a gateway marked
down or up) refreshes the copies at once, so a pause reaches every shard in the same
moment; the active beat refreshes them every second too, for a writer that died between
its change and the copy. Each copy records the Redis time of the snapshot it holds, so
of two refreshes at once the later snapshot stays. A refresh that finds the copies up to
date costs two round trips (the sets, then each shard's digest).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts


def refresh(client: Any, keys: Keys, scripts: Scripts) -> int:
    """Bring every shard's copies up to the fleet-wide sets; how many shards changed."""
    pipe = client.pipeline(transaction=True)  # one snapshot of the three, with its time
    pipe.time()
    pipe.hgetall(keys.campaigns_stopped)
    pipe.smembers(keys.gateways_down)
    pipe.hgetall(keys.campaigns_jitter)
    (seconds, micros), stopped, down, jitter = pipe.execute()
    content = [sorted(stopped.items()), sorted(down), sorted(jitter.items())]
    digest = hashlib.sha1(json.dumps(content).encode()).hexdigest()[:16]
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.get(keys.mirror_digest(shard))
    stale = [s for s, held in enumerate(pipe.execute()) if str(held).split(" ")[-1] != digest]
    if not stale:
        return 0
    snapshot = f"{seconds}{micros:06d} {digest}"
    args: list[Any] = [snapshot, len(stopped), *(x for pair in content[0] for x in pair)]
    args += [len(down), *content[1], len(jitter), *(x for pair in content[2] for x in pair)]
    pipe = client.pipeline(transaction=False)
    for shard in stale:
        scripts.mirror(
            keys=[
                keys.mirror_campaigns_stopped(shard),
                keys.mirror_gateways_down(shard),
                keys.mirror_campaigns_jitter(shard),
                keys.mirror_digest(shard),
            ],
            args=args,
            client=pipe,
        )
    return sum(int(changed) for changed in pipe.execute())
