"""Gateway access: vendor route tables, the HTTP client, and a simulator for dev and tests."""

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
