"""The one exception tree of wxtasks.

::

    WxTasksError
    ├── ConfigError                  a setting wxtasks cannot run with (names the variable)
    ├── BadInputError                a caller's argument is wrong; never retried
    ├── AccountError                 (app_id)
    │   ├── UnknownAccountError      the appId is not registered
    │   └── TransitionRefused        the state machine refused an edge (state, event)
    ├── GatewayError                 (app_id) anything that went wrong talking to the gateway
    │   ├── GatewayAuthError         the token was refused
    │   ├── GatewayUnavailableError  the request never left (refused, DNS, 503): safe to retry
    │   ├── GatewayOutcomeUnknownError  the request left and no answer came: it may have acted
    │   └── GatewayBusinessError     the gateway answered ret != 200 (ret, msg)
    │       └── AccountOfflineError  ... and the reason is that the account is offline
    └── RateLimitedError             no token yet (retry_after_s)

Third-party errors (requests, redis) are translated at the boundary with ``raise ... from``.
No error carries the gateway token.
"""

from __future__ import annotations


class WxTasksError(Exception):
    """Root of every error wxtasks raises on purpose."""


class ConfigError(WxTasksError):
    """A setting is missing or invalid; the message names the environment variable."""


class BadInputError(WxTasksError, ValueError):
    """A caller passed something wxtasks cannot act on (no appId, empty content, ...)."""


class AccountError(WxTasksError):
    def __init__(self, app_id: str, message: str) -> None:
        super().__init__(f"{message} (appId={app_id})")
        self.app_id = app_id


class UnknownAccountError(AccountError):
    def __init__(self, app_id: str) -> None:
        super().__init__(app_id, "unknown account: not registered")


class TransitionRefused(AccountError):
    def __init__(self, app_id: str, state: str, event: str) -> None:
        super().__init__(app_id, f"event {event} is not allowed in state {state}")
        self.state = state
        self.event = event


class GatewayError(WxTasksError):
    def __init__(self, message: str, *, app_id: str | None = None, operation: str = "") -> None:
        where = " ".join(p for p in (operation, f"appId={app_id}" if app_id else "") if p)
        super().__init__(f"{message} ({where})" if where else message)
        self.app_id = app_id
        self.operation = operation


class GatewayAuthError(GatewayError):
    """The gateway refused the token (wrong, expired, or out of client slots)."""


class GatewayUnavailableError(GatewayError):
    """The request never reached the gateway: nothing happened there, retrying is safe."""


class GatewayOutcomeUnknownError(GatewayError):
    """The request was sent but no answer came (timeout, reset): it may have taken effect."""


class GatewayBusinessError(GatewayError):
    """The gateway answered with ``ret != 200``."""

    def __init__(self, ret: int, msg: str, *, app_id: str | None = None, operation: str = ""):
        super().__init__(f"gateway error ret={ret}: {msg}", app_id=app_id, operation=operation)
        self.ret = ret
        self.msg = msg


class AccountOfflineError(GatewayBusinessError):
    """The gateway says the account is offline (e.g. "发送消息失败-微信已离线(-1)")."""


class RateLimitedError(WxTasksError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited: retry after {retry_after_s:.3f}s")
        self.retry_after_s = retry_after_s
