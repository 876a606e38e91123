"""The console's campaigns pages: progress, pause / resume (operator), cancel (admin), the
report as CSV (cells a spreadsheet would run as a formula are made text).

Everything goes through :class:`wxtasks.campaigns.store.Campaigns` (the runtime's), the same
object the ``wxtasks campaigns`` commands use.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import quote

from tornado import web

from wxtasks.campaigns.store import OUTCOMES, CampaignNotFound, CampaignState, csv_safe
from wxtasks.console.auth import ADMIN, OPERATOR, requires
from wxtasks.console.base import BaseHandler

#: the report's columns (as `wxtasks campaigns report --csv` has them)
REPORT_FIELDS = ["index", "task_id", "app_id", "to_wxid", "status", "msgId", "newMsgId", "error"]
#: each action and the role it needs (CampaignControlHandler / CampaignCancelHandler)
ACTIONS = {"pause": OPERATOR, "resume": OPERATOR, "cancel": ADMIN}


def _url(campaign_id: str, sub: str = "") -> str:
    return f"/campaigns/{quote(campaign_id, safe='')}{sub}"


def progress(c: dict[str, Any]) -> dict[str, Any]:
    """What a progress bar shows: targets ended (any outcome) of the total, in percent."""
    ended = sum(int(c.get(k, 0)) for k in OUTCOMES)
    total = int(c.get("total", 0))
    return {"ended": ended, "total": total, "percent": round(100 * ended / total) if total else 0}


class CampaignsHandler(BaseHandler):
    async def get(self) -> None:
        items = await self.console.run(self.console.rt.campaigns.list)
        items.sort(key=lambda c: c["created_at"], reverse=True)
        template = "campaigns_rows.html" if self.get_argument("part", "") else "campaigns.html"
        self.render(template, campaigns=items, progress=progress, outcomes=OUTCOMES, url=_url)


class CampaignHandler(BaseHandler):
    async def get(self, campaign_id: str) -> None:
        try:
            c = await self.console.run(self.console.rt.campaigns.show, campaign_id)
        except CampaignNotFound:
            raise web.HTTPError(404, "no campaign %s", campaign_id) from None
        template = "campaign_live.html" if self.get_argument("part", "") else "campaign.html"
        self.render(
            template,
            c=c,
            p=progress(c),
            outcomes=OUTCOMES,
            url=_url(campaign_id),
            actions=actions_for(c["state"]),
            needs=ACTIONS,
            message=self.get_argument("message", ""),
        )


def actions_for(state: str) -> list[str]:
    if state in (CampaignState.RUNNING, CampaignState.SCHEDULED):
        return ["pause", "cancel"]
    if state == CampaignState.PAUSED:
        return ["resume", "cancel"]
    return []


class _CampaignAction(BaseHandler):
    async def _act(self, campaign_id: str, action: str) -> None:
        campaigns = self.console.rt.campaigns
        try:
            c = await self.console.run(getattr(campaigns, action), campaign_id)
        except CampaignNotFound:
            raise web.HTTPError(404, "no campaign %s", campaign_id) from None
        await self.audit(f"campaign.{action}", "campaign", campaign_id, f"now {c['state']}")
        self.redirect(_url(campaign_id) + "?message=" + quote(f"{action}: now {c['state']}"))

    async def _show(self, campaign_id: str) -> dict[str, Any]:
        try:
            return await self.console.run(self.console.rt.campaigns.show, campaign_id)
        except CampaignNotFound:
            raise web.HTTPError(404, "no campaign %s", campaign_id) from None


class CampaignControlHandler(_CampaignAction):
    @requires(OPERATOR)
    async def post(self, campaign_id: str, action: str) -> None:
        await self._act(campaign_id, action)


class CampaignCancelHandler(_CampaignAction):
    @requires(ADMIN)
    async def post(self, campaign_id: str) -> None:
        if self.get_body_argument("confirmed", "") != "yes":
            c = await self._show(campaign_id)
            self.render("campaign_cancel.html", c=c, p=progress(c), url=_url(campaign_id))
            return
        await self._act(campaign_id, "cancel")


class CampaignReportHandler(BaseHandler):
    async def get(self, campaign_id: str) -> None:
        def build() -> str:
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=REPORT_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in self.console.rt.campaigns.report(campaign_id):
                writer.writerow({k: csv_safe(v) for k, v in row.items()})
            return out.getvalue()

        try:
            body = await self.console.run(build)
        except CampaignNotFound:
            raise web.HTTPError(404, "no campaign %s", campaign_id) from None
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="campaign-{campaign_id}.csv"')
        self.finish(body.encode("utf-8-sig"))  # the BOM: Excel reads the Chinese right


_ID = r"([^/]+)"

ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/campaigns", CampaignsHandler),
    (rf"/campaigns/{_ID}", CampaignHandler),
    (rf"/campaigns/{_ID}/(pause|resume)", CampaignControlHandler),
    (rf"/campaigns/{_ID}/cancel", CampaignCancelHandler),
    (rf"/campaigns/{_ID}/report\.csv", CampaignReportHandler),
]
