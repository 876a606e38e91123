"""A small helper for Python apps that enqueue sends.

Other apps need nothing from wxtasks but the task names; this wrapper only saves typing::

    from wxtasks.client import WxTasksClient
    wx = WxTasksClient(broker_url="redis://host:6379/1", backend_url="redis://host:6379/0")
    result = wx.send_text("wx_app_1", "wxid_customer", "hello").get(timeout=60)
    assert result["status"] in {"sent", "duplicate", "failed", "unknown"}

The same with plain Celery::

    Celery(broker=BROKER, backend=BACKEND).send_task(
        "wxtasks.send_text", kwargs={"app_id": ..., "to_wxid": ..., "content": ...},
        queue="send")
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from wxtasks.worker.celeryconf import CONTROL_QUEUE, ENQUEUED_HEADER, SEND_QUEUE


class WxTasksClient:
    def __init__(
        self,
        broker_url: str | None = None,
        backend_url: str | None = None,
        *,
        app: Celery | None = None,
    ) -> None:
        if app is None:
            app = Celery("wxtasks-client", broker=broker_url, backend=backend_url)
            app.conf.update(
                task_serializer="json",
                result_serializer="json",
                accept_content=["json"],
                broker_connection_retry_on_startup=True,
            )
        self.app = app

    @classmethod
    def from_settings(cls, settings: Any) -> WxTasksClient:
        """A client that knows wxtasks' queues and routes (quorum queue arguments too)."""
        from wxtasks.worker.celeryconf import configure

        return cls(app=configure(Celery("wxtasks-client"), settings))

    def _send(
        self, name: str, kwargs: dict[str, Any], queue: str = SEND_QUEUE, **options: Any
    ) -> AsyncResult:
        # the deadline of a send counts from here, however often it is redelivered
        headers = {ENQUEUED_HEADER: time.time(), **(options.pop("headers", None) or {})}
        return self.app.send_task(
            name,
            kwargs={k: v for k, v in kwargs.items() if v is not None},
            queue=queue,
            headers=headers,
            **options,
        )

    def send_text(
        self,
        app_id: str,
        to_wxid: str,
        content: str,
        *,
        ats: str | None = None,
        dedup_key: str | None = None,
        lane: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        return self._send(
            "wxtasks.send_text",
            {
                "app_id": app_id,
                "to_wxid": to_wxid,
                "content": content,
                "ats": ats,
                "dedup_key": dedup_key,
                "lane": lane,
            },
            **options,
        )

    def send_image(
        self,
        app_id: str,
        to_wxid: str,
        img_url: str,
        *,
        dedup_key: str | None = None,
        lane: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        return self._send(
            "wxtasks.send_image",
            {
                "app_id": app_id,
                "to_wxid": to_wxid,
                "img_url": img_url,
                "dedup_key": dedup_key,
                "lane": lane,
            },
            **options,
        )

    def send_file(
        self,
        app_id: str,
        to_wxid: str,
        file_url: str,
        file_name: str,
        *,
        dedup_key: str | None = None,
        lane: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        return self._send(
            "wxtasks.send_file",
            {
                "app_id": app_id,
                "to_wxid": to_wxid,
                "file_url": file_url,
                "file_name": file_name,
                "dedup_key": dedup_key,
                "lane": lane,
            },
            **options,
        )

    def send_link(
        self,
        app_id: str,
        to_wxid: str,
        title: str,
        desc: str,
        link_url: str,
        thumb_url: str,
        *,
        dedup_key: str | None = None,
        lane: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        return self._send(
            "wxtasks.send_link",
            {
                "app_id": app_id,
                "to_wxid": to_wxid,
                "title": title,
                "desc": desc,
                "link_url": link_url,
                "thumb_url": thumb_url,
                "dedup_key": dedup_key,
                "lane": lane,
            },
            **options,
        )

    def broadcast(
        self, app_ids: list[str], to_wxid: str, content: str, **options: Any
    ) -> AsyncResult:
        return self._send(
            "wxtasks.broadcast",
            {"app_ids": app_ids, "to_wxid": to_wxid, "content": content},
            **options,
        )

    def bulk_send(
        self, app_id: str, to_wxids: list[str], content: str, **options: Any
    ) -> AsyncResult:
        return self._send(
            "wxtasks.bulk_send",
            {"app_id": app_id, "to_wxids": to_wxids, "content": content},
            **options,
        )

    def login(self, app_id: str) -> AsyncResult:
        return self._send("wxtasks.login", {"app_id": app_id}, queue=CONTROL_QUEUE)

    def task(
        self, name: str, kwargs: dict[str, Any], queue: str = SEND_QUEUE, **options: Any
    ) -> AsyncResult:
        return self._send(name, kwargs, queue=queue, **options)
