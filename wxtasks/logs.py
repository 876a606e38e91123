"""Logging for entry points: text for people, JSON lines for log pipelines.

Library modules only do ``logging.getLogger(__name__)``; processes (workers, beat, the
CLI, the simulator) call ``configure_logging`` once. Every account-related message carries
``appId=<id>``; the JSON formatter lifts it into an ``app_id`` field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from wxtasks.config import Settings

_APP_ID = re.compile(r"appId=([^\s,;)]+)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        app_id = getattr(record, "app_id", None)
        if app_id is None:
            match = _APP_ID.search(message)
            app_id = match.group(1) if match else None
        if app_id:
            entry["app_id"] = app_id
        for key in ("task_id", "task_name", "processName"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings, *, stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("urllib3", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
