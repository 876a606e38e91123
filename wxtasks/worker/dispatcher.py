"""The dispatcher process, ``wxtasks dispatcher``: a role of its own, any number of them.

Each one takes its share of the shards (leases, :mod:`wxtasks.send.leases`) and moves
their due messages from the outbox onto the send queue every ``Dispatcher.TICK_S``, each
dispatch call's messages published together (:mod:`wxtasks.worker.publish`). Two
or more run in production (docker-compose and ``wxtasks dev`` run 2): when one dies, the
others dispatch its shards within about 5 s; when one joins, it takes its share within a
second or two. Send workers do not dispatch: see the README's "Dispatchers".

SIGTERM or SIGINT stops it cleanly: it gives its shards up at once, so the others need
not wait for its leases to run out.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis

from wxtasks import layout, mirrors
from wxtasks.config import Settings
from wxtasks.runtime import Runtime
from wxtasks.send.dispatcher import Dispatcher
from wxtasks.worker.publish import batch_publisher

logger = logging.getLogger(__name__)

#: after an error (Redis or the broker away) the dispatcher tries again this often
RETRY_S = 1.0


def _layout_checked(rt: Runtime) -> bool:
    """True once the Redis's layout is this release's (raises LayoutError when it is not);
    False while Redis cannot be reached (a dispatcher started before Redis waits for it)."""
    try:
        layout.ensure(rt.redis, rt.keys)
        return True
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        logger.warning("dispatcher: cannot reach Redis yet (%s); waiting", exc)
        return False


def run(settings: Settings, stop: threading.Event | None = None) -> None:
    """Dispatch until ``stop`` is set (or SIGTERM / SIGINT, when on the main thread)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    rt = Runtime(settings)
    while not _layout_checked(rt) and not stop.wait(RETRY_S):
        pass
    mirrors.refresh(rt.redis, rt.keys, rt.scripts)  # whatever a dead writer left uncopied
    dispatcher = rt.dispatcher(batch_publisher(rt.celery, rt.campaigns))
    logger.info(
        "dispatcher %s: starting (%d shards, split with the other dispatchers)",
        dispatcher.leases.me,
        rt.keys.shards,
    )
    failing = False
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                dispatcher.tick()
                if failing:
                    logger.info("dispatcher: working again")
                failing = False
            except Exception as exc:  # Redis or the broker away: leases bring it all back
                if not failing:
                    logger.warning("dispatcher: %s: %s (retrying)", type(exc).__name__, exc)
                failing = True
                stop.wait(RETRY_S)
                continue
            stop.wait(max(0.0, Dispatcher.TICK_S - (time.monotonic() - started)))
    finally:
        try:
            dispatcher.stop()
        except Exception as exc:  # Redis away: the leases run out by themselves
            logger.warning("dispatcher: could not give its shards up (%s)", exc)
        rt.close()
        logger.info("dispatcher %s: stopped", dispatcher.leases.me)
