"""wxtasks: keep many personal WeChat accounts alive and sending from Celery workers.

Importing the package starts nothing and connects to nothing, and imports only what is
light: the names that need redis or requests (``Account``, ``AccountStore``,
``GatewayClient``, ``SendReceipt``) are imported on first use, so a CLI command that does
not need them does not pay for them.
"""

from typing import TYPE_CHECKING, Any

from wxtasks.accounts.machine import Event, State
from wxtasks.config import Settings
from wxtasks.errors import (
    AccountError,
    AccountOfflineError,
    BadInputError,
    ConfigError,
    GatewayAuthError,
    GatewayBusinessError,
    GatewayError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
    RateLimitedError,
    TransitionRefused,
    UnknownAccountError,
    WxTasksError,
)

if TYPE_CHECKING:
    from wxtasks.accounts.store import Account, AccountStore
    from wxtasks.gateway import GatewayClient, SendReceipt

#: public names imported on first use: name -> module
_LAZY = {
    "Account": "wxtasks.accounts.store",
    "AccountStore": "wxtasks.accounts.store",
    "GatewayClient": "wxtasks.gateway",
    "SendReceipt": "wxtasks.gateway",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wxtasks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Account",
    "AccountError",
    "AccountOfflineError",
    "AccountStore",
    "BadInputError",
    "ConfigError",
    "Event",
    "GatewayAuthError",
    "GatewayBusinessError",
    "GatewayClient",
    "GatewayError",
    "GatewayOutcomeUnknownError",
    "GatewayUnavailableError",
    "RateLimitedError",
    "SendReceipt",
    "Settings",
    "State",
    "TransitionRefused",
    "UnknownAccountError",
    "WxTasksError",
    "__version__",
]
