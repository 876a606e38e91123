"""wxtasks: keep many personal WeChat accounts alive and sending from Celery workers.

Importing the package starts nothing and connects to nothing.
"""

from wxtasks.accounts.machine import Event, State
from wxtasks.accounts.store import Account, AccountStore
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
from wxtasks.gateway import GatewayClient, SendReceipt

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
