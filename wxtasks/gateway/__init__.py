"""Gateway access: vendor route tables and the HTTP client (the simulator is in wxtasks.dev)."""

from wxtasks.gateway.client import GatewayClient, LoginQr, LoginStatus, SendReceipt
from wxtasks.gateway.profiles import PROFILES, Profile, get_profile

__all__ = [
    "PROFILES",
    "GatewayClient",
    "LoginQr",
    "LoginStatus",
    "Profile",
    "SendReceipt",
    "get_profile",
]
