"""Where the benches find wxtasks' modules, in the layout of whichever tree they run against.

``bench/hotpaths.py --against REV`` runs this directory's measurement code against an older
checkout too, and modules moved into subpackages at 8d58b45 (``wxtasks.outbox`` ->
``wxtasks.send.outbox``, ``wxtasks.machine`` -> ``wxtasks.accounts.machine``, ...; before
round 2 the dev tools were top-level modules too). Each
name below tries the current place first and falls back to the older ones. Only the
modules themselves are looked up here: what they export is the public-ish surface the
benches use (Runtime, task names, the Dispatcher's tick), unchanged across the move.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def module(*names: str) -> ModuleType:
    """The first of ``names`` that exists in this tree. A module that exists but fails to
    import for another reason (a missing dependency, a bug) raises as it is."""
    missing: list[str] = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # only "this module (or a package on its path) is not in this layout" moves on
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            missing.append(name)
        except ImportError as exc:
            # ``wxtasks.accounts`` is a module in the old layout: "... is not a package"
            if "is not a package" not in str(exc):
                raise
            missing.append(name)
    raise ModuleNotFoundError(f"none of {', '.join(missing)} in this tree")


def machine() -> ModuleType:
    return module("wxtasks.accounts.machine", "wxtasks.machine")


def celeryconf() -> ModuleType:
    return module("wxtasks.worker.celeryconf", "wxtasks.celeryconf")


def outbox() -> ModuleType:
    return module("wxtasks.send.outbox", "wxtasks.outbox")


def dispatcher() -> ModuleType:
    """The module defining ``Dispatcher`` (its own module in the target layout)."""
    return module("wxtasks.send.dispatcher", "wxtasks.send.outbox", "wxtasks.outbox")


def beat() -> ModuleType:
    return module("wxtasks.worker.beat", "wxtasks.beat")


def redis_server() -> ModuleType:
    return module("wxtasks.dev.redis_server", "wxtasks.redis_server")


def stack() -> ModuleType:
    return module("wxtasks.dev.stack", "wxtasks.stack")
