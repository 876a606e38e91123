"""The console's web application: its routes, assembled from the areas, and serving.

Each area (:mod:`~wxtasks.console.pages`, :mod:`~wxtasks.console.campaigns`,
:mod:`~wxtasks.console.overview`) stands on :mod:`wxtasks.console.base` and lists its
``ROUTES``; this module, the top of the console, puts them together.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer

from wxtasks.config import Settings
from wxtasks.console import campaigns, overview, pages
from wxtasks.console.base import HERE, Console, StaticHandler

ROUTES = [*pages.ROUTES, *campaigns.ROUTES, *overview.ROUTES]


def make_app(console: Console) -> web.Application:
    handlers: list[Any] = [(pattern, cls, {"console": console}) for pattern, cls in ROUTES]
    handlers.append(
        (
            r"/static/(.*)",
            StaticHandler,
            {"console": console, "path": os.path.join(HERE, "static")},
        )
    )
    return web.Application(
        handlers,
        template_path=os.path.join(HERE, "templates"),
        cookie_secret=console.secret.decode(),
        static_path=None,
        compress_response=True,
        autoreload=False,
    )


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    flower_url: str = "",
    server_timing: bool = False,
) -> None:
    """Run the console until SIGINT/SIGTERM."""
    console = Console(settings, flower_url=flower_url, server_timing=server_timing)
    console.executor.submit(console.warm_trends, overview.WINDOWS.values())

    async def main() -> None:
        # proxy headers are read per request, and only from WXTASKS_TRUSTED_PROXIES
        server = HTTPServer(make_app(console), xheaders=False)
        server.listen(port, address=host)
        print(f"wxtasks console: http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
