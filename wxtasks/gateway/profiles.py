"""Vendor profiles: one route table per gateway family.

A profile says, for each operation wxtasks uses, which path to POST to, which header
carries the token, how a few body fields are spelled on the wire and how the answer's
``data`` is read. Adding a vendor means adding a ``Profile`` here, not code elsewhere.
Paths are relative to ``WECHATAPI_BASE_URL``. See shared/GATEWAY.md for the sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from wxtasks.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    name: str
    token_header: str
    paths: Mapping[str, str]
    #: wire spelling of body fields whose name differs from GeWe's (``toWxid`` -> ``toUser``)
    field_names: Mapping[str, str] = field(default_factory=dict)
    #: where check_online's answer sits: ``None`` = ``data`` is a bare bool
    online_field: str | None = None

    def path(self, operation: str) -> str | None:
        return self.paths.get(operation)

    def supports(self, operation: str) -> bool:
        return operation in self.paths

    def wire(self, body: Mapping[str, object]) -> dict[str, object]:
        """The request body with this vendor's field spelling."""
        return {self.field_names.get(k, k): v for k, v in body.items()}

    def read_online(self, data: object) -> bool:
        if self.online_field is not None:
            data = data.get(self.online_field) if isinstance(data, Mapping) else None
        if isinstance(data, str):
            return data.strip().lower() == "true"
        return bool(data)


_GEWE_PATHS = MappingProxyType(
    {
        "check_online": "/login/checkOnline",
        "reconnect": "/login/reconnection",
        "get_login_qr": "/login/getLoginQrCode",
        "check_login": "/login/checkLogin",
        "logout": "/login/logout",
        "set_callback": "/login/setCallback",
        "send_text": "/message/postText",
        "send_image": "/message/postImage",
        "send_file": "/message/postFile",
        "send_link": "/message/postLink",
        "fetch_contacts": "/contacts/fetchContactsList",
        "chatroom_members": "/group/getChatroomMemberList",
    }
)

PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "videosapi": Profile("videosapi", "VideosApi-token", _GEWE_PATHS),
        "gewe": Profile("gewe", "X-GEWE-TOKEN", _GEWE_PATHS),
        "v1": Profile(
            "v1",
            "VideosApi-token",
            MappingProxyType(
                {
                    "check_online": "/v1/account/checkOnline",
                    "heartbeat": "/v1/account/heartbeat",
                    "send_text": "/v1/message/sendText",
                }
            ),
            field_names=MappingProxyType({"toWxid": "toUser"}),
            online_field="isOnline",
        ),
    }
)


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"WECHATAPI_PROFILE must be one of {', '.join(PROFILES)}; got {name!r}"
        ) from None
