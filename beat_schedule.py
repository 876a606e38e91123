"""The Celery beat schedule of wxtasks (``celery -A workers beat`` loads it).

Per-account timers do not live here: every appId has its next heartbeat due time in the
Redis sorted set ``wx:schedule:heartbeat``. Beat only has to sweep that set often; each
sweep takes the due entries atomically, moves them one interval on, and dispatches
``wxtasks.heartbeat`` tasks in batches. The heartbeat tick also drives the slower timers
(reconnect chains that lost their worker, the ERROR retry plan, expired QR logins).
``sample-trends`` writes the minute's gauges of the console's Overview (:mod:`wxtasks.trends`).
"""

from __future__ import annotations

from typing import Any

#: how often beat sweeps the heartbeat schedule, seconds; bounds heartbeat lateness
SWEEP_INTERVAL_S = 1.0

beat_schedule: dict[str, dict[str, Any]] = {
    "sweep-heartbeats": {
        "task": "wxtasks.sweep_heartbeats",
        "schedule": SWEEP_INTERVAL_S,
        # a sweep nobody ran in time is replaced by the next one, never piled up
        "options": {"queue": "control", "expires": SWEEP_INTERVAL_S * 5},
    },
    # the console's Overview: this minute's gauges, written by the first run in the minute
    "sample-trends": {
        "task": "wxtasks.sample_trends",
        "schedule": 10.0,
        "options": {"queue": "control", "expires": 10.0},
    },
}
