from __future__ import annotations

import io
import json
import logging

from wxtasks.config import Settings
from wxtasks.logs import configure_logging


def test_json_lines_carry_the_app_id() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging(Settings.from_env({"WXTASKS_LOG_FORMAT": "json"}), stream=stream)
        logging.getLogger("wxtasks.accounts.lifecycle").warning(
            "account %s appId=%s", "x", "shop-1"
        )
        logging.getLogger("wxtasks.other").info("no account here")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["app_id"] == "shop-1" and first["level"] == "WARNING"
    assert first["logger"] == "wxtasks.accounts.lifecycle" and "ts" in first
    assert "app_id" not in second
