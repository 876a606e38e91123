"""Configure a Celery app for wxtasks from Settings (queues, routes, crash safety)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kombu.entity import Queue

from wxtasks.config import KOMBU_SENTINEL_SCHEME, Settings

if TYPE_CHECKING:
    from celery import Celery

#: with Sentinel, a command to a primary that froze gives up after this long, so the
#: client asks the sentinels for the new primary (the state client's is the same)
SENTINEL_SOCKET_TIMEOUT_S = 5.0

SEND_QUEUE = "send"
CONTROL_QUEUE = "control"
#: where a producer's task lands when it names no queue; send workers consume it too
DEFAULT_QUEUE = "celery"

# message headers of send tasks (all optional; a plain producer sets none)
#: when the message was first enqueued (unix seconds): its deadline counts from here
ENQUEUED_HEADER = "wx_enqueued_at"
#: how many gateway attempts failed retryably before this one
ATTEMPT_HEADER = "wx_attempt"
#: "1" when the outbox's dispatcher published it
OUTBOX_HEADER = "wx_outbox"
#: the Redis time (ms) at which the dispatcher took its tokens
PAID_HEADER = "wx_paid_at"
#: the campaign whose target the message is
CAMPAIGN_HEADER = "wx_campaign"

SEND_TASKS = (
    "wxtasks.send_text",
    "wxtasks.send_image",
    "wxtasks.send_file",
    "wxtasks.send_link",
    "wxtasks.broadcast",
    "wxtasks.bulk_send",
    "wxtasks.campaign",
)
CONTROL_TASKS = (
    "wxtasks.login",
    "wxtasks.heartbeat",
    "wxtasks.reconnect",
    "wxtasks.alert",
    "wxtasks.sweep_heartbeats",
    "wxtasks.on_message",
    "wxtasks.on_offline",
)


def queues(settings: Settings) -> list[Queue]:
    """The queues wxtasks consumes. On RabbitMQ with WXTASKS_QUORUM_QUEUES, send and
    control are quorum queues (replicated; Celery then uses native delayed delivery for
    countdowns). The default queue stays classic so a producer that names no queue and
    knows nothing of queue arguments can still declare it."""
    amqp = urlsplit(settings.broker_url).scheme in ("amqp", "amqps", "pyamqp")
    quorum = {"x-queue-type": "quorum"} if amqp and settings.quorum_queues else None
    return [
        Queue(SEND_QUEUE, queue_arguments=quorum),
        Queue(CONTROL_QUEUE, queue_arguments=quorum),
        Queue(DEFAULT_QUEUE),
    ]


def celery_url(url: str, settings: Settings) -> tuple[str, str]:
    """(the URL, the Sentinel master's name or ""): kombu's and Celery's
    ``sentinel://h1:26379/<db>;sentinel://h2:26379/<db>`` needs ``master_name`` in the
    transport options: WXTASKS_REDIS_URL's master. (Celery reads CELERY_BROKER_URL and
    CELERY_RESULT_BACKEND from the environment itself, so they must be in its own form.)"""
    if urlsplit(url).scheme != KOMBU_SENTINEL_SCHEME:
        return url, ""
    return url, settings.sentinel_master


def configure(app: Celery, settings: Settings) -> Celery:
    app.wxtasks_settings = settings
    routes: dict[str, Any] = {name: {"queue": SEND_QUEUE} for name in SEND_TASKS}
    routes.update({name: {"queue": CONTROL_QUEUE} for name in CONTROL_TASKS})
    # nothing waits in the broker (waiting messages are parked in the Redis outbox), so
    # a worker holds a message for one gateway call at most: a short visibility timeout
    # brings a dead worker's messages back within seconds
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_s,
        # look for tasks a dead worker held every few seconds, not every ~100 s (kombu's
        # default interval 10 x throttle 10): the scan is one sorted-set range query
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
        # a broker that vanishes without closing the socket must not hang a publish
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
    }
    broker_url, broker_master = celery_url(settings.broker_url, settings)
    backend_url, backend_master = celery_url(settings.result_backend_url, settings)
    backend_options: dict[str, Any] = {"retry_policy": {"timeout": 5.0}}
    extra: dict[str, Any] = {}
    if broker_master:
        transport["master_name"] = broker_master
        # a primary that froze answers nothing: give up on it in seconds and ask the
        # sentinels, instead of waiting out a 30 s socket timeout
        transport["socket_timeout"] = SENTINEL_SOCKET_TIMEOUT_S
        transport["socket_connect_timeout"] = 2
        # the consumer reads without a socket timeout (event loop): its health check PING
        # is what notices a primary that froze
        transport["health_check_interval"] = 2
        # a failover takes the sentinels' down-after time plus an election: a publish
        # keeps trying across it instead of failing the producer after ~1 s
        extra["task_publish_retry_policy"] = {
            "max_retries": 20,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        }
    if backend_master:
        backend_options["master_name"] = backend_master
        extra["redis_socket_timeout"] = SENTINEL_SOCKET_TIMEOUT_S
        extra["redis_socket_connect_timeout"] = 2
    app.conf.update(
        broker_url=broker_url,
        result_backend=backend_url,
        broker_transport_options=transport,
        result_backend_transport_options=backend_options,
        **extra,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives any broker restart
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_routes=routes,
        task_queues=queues(settings),
        task_default_queue=DEFAULT_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # a task that ends by raising Ignore (a parked send, a bulk_send) leaks ~250 KB in
        # the prefork child on Celery 5.7 (measured): a child past this many KiB is
        # replaced after its task, so a long 群发 never grows a worker without bound
        worker_max_memory_per_child=300_000,
        # Flower learns of a task when a worker receives it; "sent" events from beat's
        # per-second sweep would only fill it with PENDING rows
        task_send_sent_event=False,
        worker_send_task_events=True,
        result_expires=86_400,
        result_extended=True,
        task_ignore_result=False,
        beat_scheduler="wxtasks.worker.beat:LockedScheduler",
        worker_consumer="wxtasks.worker.consumer:Consumer",
        beat_max_loop_interval=1,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app
