"""The two shipped message handlers: keyword auto-reply and cross-account forwarding.

Both reply through ``ctx.send_text`` (the normal send pipeline: limits and dedup apply)
with a dedup key derived from the received message, so a message handled twice still
produces one reply.

``WXTASKS_AUTOREPLY_RULES``  JSON object ``{"keyword": "reply", ...}``: the first keyword
                             found in a received text answers in the same chat.
``WXTASKS_FORWARD_RULES``    JSON array of ``{"from_app_id", "to_app_id", "to_wxid",
                             "keyword"?}``: a message received by ``from_app_id`` (and
                             containing ``keyword``, when given) is sent on by
                             ``to_app_id`` to ``to_wxid``.
"""

from __future__ import annotations

import json

from wxtasks.inbound.messages import HandlerContext, InboundMessage

TEXT = 1


def keyword_reply(message: InboundMessage, ctx: HandlerContext) -> None:
    if message.msg_type != TEXT:
        return
    rules: dict[str, str] = json.loads(ctx.settings.autoreply_rules)
    for keyword, reply in rules.items():
        if keyword and keyword in message.content:
            ctx.send_text(
                message.app_id,
                message.chat,
                reply,
                dedup_key=f"autoreply:{message.app_id}:{message.new_msg_id}",
            )
            return


def forward(message: InboundMessage, ctx: HandlerContext) -> None:
    rules: list[dict[str, str]] = json.loads(ctx.settings.forward_rules)
    for i, rule in enumerate(rules):
        if rule.get("from_app_id") != message.app_id:
            continue
        keyword = rule.get("keyword")
        if keyword and keyword not in message.content:
            continue
        who = message.sender_wxid or message.from_wxid
        ctx.send_text(
            rule["to_app_id"],
            rule["to_wxid"],
            f"[{message.app_id} · {who}] {message.content}",
            dedup_key=f"forward:{i}:{message.app_id}:{message.new_msg_id}",
        )
