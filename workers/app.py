"""The Celery app every wxtasks process shares."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

import beat_schedule
from wxtasks.config import Settings
from wxtasks.logs import configure_logging
from wxtasks.runtime import close_runtime
from wxtasks.worker.celeryconf import DEFAULT_QUEUE, SEND_QUEUE, configure

settings = Settings.from_env()
app = configure(Celery("wxtasks"), settings)
app.conf.beat_schedule = beat_schedule.beat_schedule
app.conf.include = ["wxtasks.tasks"]
import wxtasks.tasks  # noqa: E402,F401  - registers the tasks with this app


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings)


@signals.worker_process_shutdown.connect
def _close_runtime(**_: Any) -> None:
    """A pool process (or a solo worker) that ends releases what its Runtime holds."""
    close_runtime(app)


@signals.worker_init.connect
def _check_layout(**_: Any) -> None:
    """A worker refuses to start on a Redis of another key layout, saying what to run
    (Redis away at start is no reason to refuse: the worker waits for it as it runs)."""
    from wxtasks import layout
    from wxtasks.runtime import Runtime

    rt = Runtime(settings)
    try:
        layout.ensure(rt.redis, rt.keys)
    except layout.LayoutError as exc:
        raise SystemExit(f"wxtasks: {exc}") from None
    finally:
        rt.close()


@signals.celeryd_after_setup.connect
def _default_queue(sender: str, instance: Any, **_: Any) -> None:
    """A send worker also serves the default queue, where producers without routes land."""
    queues = instance.app.amqp.queues
    if SEND_QUEUE in queues.consume_from and DEFAULT_QUEUE not in queues.consume_from:
        queues.select_add(DEFAULT_QUEUE)
