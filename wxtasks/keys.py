"""Every Redis key wxtasks uses, in one place.

Names are ``<prefix>:<kind>:<id>[:<sub>]``; the prefix (``WXTASKS_KEY_PREFIX``, default
``wx``) lets several deployments or test runs share one Redis.

**Shards.** Accounts are split into a fixed number of shards (``WXTASKS_SHARDS``, default
64, fixed for a deployment): an account's shard is ``crc32(appId) % shards``
(:func:`shard_of`). Each account's own state and every key one dispatch call touches for
a shard carry that shard's hash tag, ``{s<shard>}`` (shown below as ``{s}``), so on a
Redis Cluster a shard's keys live in one slot and each dispatch call's keys are in that
slot. The keys without a shard tag are fleet-wide (a few sets every shard reads, the
coordinators of the shared buckets, campaigns, dead letters, console and events); a
dispatch call reads none of them: the three sets it needs (gateways down, campaigns
stopped, campaigns' own spacing) are copied into each shard (:mod:`wxtasks.mirrors`).
``wx:layout`` names the layout, so a process started on a Redis written by an older
release refuses to run and says to run ``wxtasks migrate``.

=====================================  ======  =============================================
key                                    type    content / TTL
=====================================  ======  =============================================
``wx:accounts``                        set     every registered appId; no TTL
``wx:{s}:acct:<appId>``                hash    the account record: state, version,
                                               retry_count, rate, burst, note, tags,
                                               gateway (absent: default),
                                               last_heartbeat_at, pacing overrides,
                                               bulk_next_at (ms), bulk_wait (the closed
                                               pacing gate's answer), ...; no TTL
``wx:{s}:bucket:<appId>``              string  per-account token bucket (GCRA theoretical
                                               arrival time, ms); expires when full again
``wx:bucket:global``                   string  the global (fleet-wide) token bucket; same
                                               shape. The coordinator of the shards'
                                               quotas: dispatchers borrow from it
``wx:{s}:quota:global``                string  tokens the shard borrowed from the global
                                               bucket, spent by its dispatch calls; PX the
                                               refill period (unspent ones lapse)
``wx:{s}:quota:gw:<gateway>``          string  the same for a gateway's bucket
``wx:bucket:gw:<gateway>``             string  a gateway's token bucket (its API's limit);
                                               same shape
``wx:gateways``                        set     registered gateway names (``default`` is
                                               the environment's and is not stored)
``wx:gateways:down``                   set     the gateways marked down now
``wx:gateway:<gateway>``               hash    a registered gateway: base_url, profile,
                                               token_env (the variable's NAME, never the
                                               token), rate, burst, callback_secret_hash
                                               (SHA-256 of the callback path secret, never
                                               the secret), note, created_at; no TTL
``wx:gateway:<gateway>:health``        hash    failures (unavailable answers in a row),
                                               first_failure_at, down_since, last_error,
                                               up_at; no TTL
``wx:gateway:<gateway>:probe``         string  a down gateway's probe slot: whoever sets
                                               it (NX) probes; PX the probe interval
``wx:{s}:claim:<appId>:<digest>``      hash    a send claim (dedup): owner task id, status
                                               inflight|sent|unknown, gateway ids;
                                               TTL ``WXTASKS_DEDUP_TTL_S``
``wx:schedule:heartbeat``              zset    appId -> next heartbeat due (unix seconds)
``wx:schedule:later``                  zset    control tasks due later (a reconnect's backoff,
                                               a retried login or alert): JSON -> due time
``wx:beat:lock``                       string  token of the active beat; PX lock period
``wx:events``                          stream  account transitions and alerts; capped
                                               at ``WXTASKS_EVENTS_MAXLEN`` (approximate)
``wx:deadletters``                     hash    task id -> JSON of a failed/unknown message
``wx:deadletters:order``               zset    task id -> time it was dead-lettered
``wx:inbound``                         list    received messages (JSON), newest first;
                                               capped at ``WXTASKS_INBOUND_MAXLEN``
``wx:{s}:inbound:seen:<appId>:<new>``  string  the task that handled a received message;
                                               TTL one day (gateways resend)
``wx:stats:sends``                     hash    outcome -> count (sent, duplicate, failed,
                                               unknown), token_waits, token_wait_seconds
``wx:stats:heartbeat_lateness``        list    newest heartbeat lateness samples (s); capped
``wx:{s}:seen:<appId>:<task id>``      string  when a message that carries no enqueue time
                                               was first seen (ms); TTL its lane's window
``wx:{s}:outbox:messages``             hash    task id -> a waiting or dispatched message
                                               (JSON: task, kwargs, lane, enqueued, why)
``wx:{s}:outbox:<appId>:<lane>``       zset    the account's waiting messages in one lane
                                               (interactive, bulk): task id -> first
                                               enqueued (ms), FIFO
``wx:{s}:outbox:ready:<lane>``         zset    appId -> when the dispatcher should look at
                                               the account's lane next (ms)
``wx:{s}:outbox:inflight``             zset    dispatched task id -> lease end (ms); a
                                               lease that runs out is parked again
``wx:{s}:outbox:campaign_of``          hash    waiting task id -> its campaign (targets only)
``wx:{s}:outbox:to_group``             set     waiting task ids whose recipient is a group
                                               (their bulk spacing is a group's)
``wx:outbox:stats``                    hash    dispatcher figures per lane: dispatched,
                                               lag_ms, tick_at
``wx:{s}:campaigns:stopped``           hash    the shard's copy of ``wx:campaigns:stopped``,
``wx:{s}:gateways:down``               set     ``wx:gateways:down`` and
``wx:{s}:campaigns:jitter``            hash    ``wx:campaigns:jitter`` (what dispatch.lua
                                               reads, so a dispatch call stays in its
                                               shard's slot); copied by whoever changes
                                               them, and every second by the active beat
``wx:{s}:mirrors``                     string  digest of what the shard's copies hold
``wx:{s}:lease``                       string  the shard's lease: ``<dispatcher id> <fence>``;
                                               PX the lease period (4 s), renewed by its
                                               holder; every dispatch call checks it
``wx:{s}:fence``                       string  the shard's fencing counter: +1 at each
                                               new lease, so an old holder's token is stale
``wx:dispatchers``                     zset    live dispatcher id -> alive until (ms)
``wx:dispatcher:<id>``                 hash    a dispatcher's figures: host, pid, started,
                                               shards, leases_at, dispatched, fenced,
                                               rate, lag_ms, tick_at; TTL 1 minute
``wx:layout``                          hash    version (the key layout), shards
``wx:{s}:outbox:held``                 zset    messages of paused campaigns, set aside
                                               by the dispatcher: task id -> order
``wx:{s}:bulkday:<appId>:<YYYYMMDD>``  string  bulk sends dispatched on that local day
                                               (daily cap); TTL 2 days
``wx:campaigns``                       zset    campaign id -> created (unix seconds)
``wx:campaigns:stopped``               hash    campaign id -> paused | cancelled
``wx:campaigns:scheduled``             zset    campaign id -> start (unix seconds)
``wx:campaigns:jitter``                hash    campaign id -> its own bulk spacing,
                                               "MIN-MAX" seconds (only when it has one)
``wx:campaign:{id}``                   hash    the campaign: state, kind, content, start,
                                               jitter, total, ended, counts' times
``wx:campaign:{id}:targets``           hash    target index -> appId TAB wxid
``wx:campaign:{id}:counts``            hash    status -> n, appId|status -> n,
                                               appId|total -> n
``wx:campaign:{id}:results``           hash    target index -> its outcome (JSON)
``wx:console:session:<digest>``        hash    a console login session: user, role at
                                               login, fingerprint of the user's entry,
                                               created, seen, from; ``<digest>`` is the
                                               SHA-256 of the cookie's session id (the id
                                               itself is stored nowhere); TTL
                                               ``WXTASKS_CONSOLE_IDLE_S``, renewed on use
``wx:console:fails:user:<digest>``     zset    failed console logins for one user name
                                               (SHA-256 of it): attempt -> time (ms); TTL
                                               the 5-minute window
``wx:console:fails:ip:<address>``      zset    failed console logins from one client
                                               address; same shape
``wx:alerted:<alert>``                 string  an alert that repeats at most so often
                                               (``redisMemory``); TTL its quiet period
``wx:qrlogin:{appId}``                 hash    a console QR login: uuid, qr_image, phase,
                                               message, captcha_code, nick_name,
                                               started_at, expires_at, polled_at (every
                                               console process reads and drives it); TTL
                                               the QR's life + 10 minutes
``wx:qrlogin:{appId}:lock``            string  whoever holds it talks to the gateway for
                                               that login (redis-py Lock); PX 30 s
``wx:trends:<minute>``                 hash    the Overview's per-minute bucket (minute =
                                               unix seconds // 60): send:<outcome>,
                                               gw:<gateway> sends, deadletters (counted
                                               where they happen, HINCRBY in the round trip
                                               that already runs); backlog:<lane>,
                                               state:<STATE>, hb_p99_ms, up:<gateway> 1|0
                                               (sampled once a minute by beat); TTL 25 h
=====================================  ======  =============================================

An appId is part of these names, so every appId follows one rule, :data:`APP_ID_RULE`,
checked by :func:`validate_app_id` wherever an appId comes in (registration, sends,
callbacks, the CLI): what can be registered can be sent from. Real gateways' appIds
(``wx_7f3a...``) and the demo ids (``demo-01``) follow it; braces (hash tags), glob
characters (``*?[]``), ``:`` and white space cannot occur in a key through an appId.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from wxtasks.errors import BadInputError

#: shards when WXTASKS_SHARDS is not set; fixed for a deployment (an account's keys name it)
DEFAULT_SHARDS = 64
#: the key layout this release writes (``wx:layout``); 1 was the layout before shards
LAYOUT_VERSION = 2


def shard_of(app_id: str, shards: int) -> int:
    """An account's shard: a stable hash of its appId (the same in every process)."""
    return zlib.crc32(app_id.encode()) % shards


APP_ID_RULE = "1 to 64 characters, each an ASCII letter, a digit or one of _ . @ -"
#: :data:`APP_ID_RULE` as a regular expression (for a full match)
APP_ID_PATTERN = r"[A-Za-z0-9_.@-]{1,64}"
_APP_ID = re.compile(APP_ID_PATTERN)


GATEWAY_NAME_RULE = "1 to 32 characters, each an ASCII letter, a digit or one of _ . -"
_GATEWAY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def validate_gateway_name(name: object) -> str:
    """``name`` when it follows :data:`GATEWAY_NAME_RULE` (it is part of key names)."""
    if isinstance(name, str) and _GATEWAY_NAME.fullmatch(name):
        return name
    raise BadInputError(
        f"gateway name {name!r} is not valid: a gateway name is {GATEWAY_NAME_RULE}"
    )


def validate_app_id(app_id: object) -> str:
    """``app_id`` when it follows :data:`APP_ID_RULE`; else BadInputError naming the rule."""
    if isinstance(app_id, str) and _APP_ID.fullmatch(app_id):
        return app_id
    shown = repr(app_id) if len(repr(app_id)) <= 80 else repr(app_id)[:77] + "..."
    raise BadInputError(f"appId {shown} is not valid: an appId is {APP_ID_RULE}")


@dataclass(frozen=True)
class Keys:
    prefix: str = "wx"
    shards: int = DEFAULT_SHARDS

    def shard(self, app_id: str) -> int:
        return shard_of(app_id, self.shards)

    def _tag(self, shard: int) -> str:
        """``<prefix>:{s<shard>}``: what every key of one shard starts with."""
        return f"{self.prefix}:{{s{shard}}}"

    def _of(self, app_id: str) -> str:
        return self._tag(self.shard(app_id))

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}:accounts"

    def account(self, app_id: str) -> str:
        return f"{self._of(app_id)}:acct:{app_id}"

    def account_bucket(self, app_id: str) -> str:
        return f"{self._of(app_id)}:bucket:{app_id}"

    @property
    def global_bucket(self) -> str:
        return f"{self.prefix}:bucket:global"

    @property
    def gateways(self) -> str:
        return f"{self.prefix}:gateways"

    @property
    def gateways_down(self) -> str:
        return f"{self.prefix}:gateways:down"

    def gateway(self, name: str) -> str:
        return f"{self.prefix}:gateway:{name}"

    def gateway_bucket(self, name: str) -> str:
        return f"{self.prefix}:bucket:gw:{name}"

    def gateway_health(self, name: str) -> str:
        return f"{self.prefix}:gateway:{name}:health"

    def gateway_probe(self, name: str) -> str:
        return f"{self.prefix}:gateway:{name}:probe"

    def claim(self, app_id: str, digest: str) -> str:
        return f"{self._of(app_id)}:claim:{app_id}:{digest}"

    @property
    def heartbeat_schedule(self) -> str:
        return f"{self.prefix}:schedule:heartbeat"

    @property
    def later(self) -> str:
        return f"{self.prefix}:schedule:later"

    @property
    def beat_lock(self) -> str:
        return f"{self.prefix}:beat:lock"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def deadletters(self) -> str:
        return f"{self.prefix}:deadletters"

    @property
    def deadletters_order(self) -> str:
        return f"{self.prefix}:deadletters:order"

    @property
    def inbound(self) -> str:
        return f"{self.prefix}:inbound"

    def inbound_seen(self, app_id: str, new_msg_id: str) -> str:
        return f"{self._of(app_id)}:inbound:seen:{app_id}:{new_msg_id}"

    @property
    def send_stats(self) -> str:
        return f"{self.prefix}:stats:sends"

    @property
    def heartbeat_lateness(self) -> str:
        return f"{self.prefix}:stats:heartbeat_lateness"

    def seen(self, app_id: str, task_id: str) -> str:
        return f"{self._of(app_id)}:seen:{app_id}:{task_id}"

    def outbox_messages(self, shard: int) -> str:
        return f"{self._tag(shard)}:outbox:messages"

    def outbox_lane(self, app_id: str, lane: str) -> str:
        return f"{self._of(app_id)}:outbox:{app_id}:{lane}"

    def outbox_ready(self, shard: int, lane: str) -> str:
        return f"{self._tag(shard)}:outbox:ready:{lane}"

    def outbox_inflight(self, shard: int) -> str:
        return f"{self._tag(shard)}:outbox:inflight"

    def outbox_campaign_of(self, shard: int) -> str:
        return f"{self._tag(shard)}:outbox:campaign_of"

    def outbox_to_group(self, shard: int) -> str:
        return f"{self._tag(shard)}:outbox:to_group"

    @property
    def outbox_stats(self) -> str:
        return f"{self.prefix}:outbox:stats"

    def outbox_held(self, shard: int) -> str:
        return f"{self._tag(shard)}:outbox:held"

    def bulk_day(self, app_id: str, day: str) -> str:
        return f"{self._of(app_id)}:bulkday:{app_id}:{day}"

    def quota(self, shard: int, bucket: str) -> str:
        """A shard's tokens borrowed from a shared bucket (``global`` or ``gw:<name>``)."""
        return f"{self._tag(shard)}:quota:{bucket}"

    def mirror_campaigns_stopped(self, shard: int) -> str:
        return f"{self._tag(shard)}:campaigns:stopped"

    def mirror_gateways_down(self, shard: int) -> str:
        return f"{self._tag(shard)}:gateways:down"

    def mirror_campaigns_jitter(self, shard: int) -> str:
        return f"{self._tag(shard)}:campaigns:jitter"

    def mirror_digest(self, shard: int) -> str:
        return f"{self._tag(shard)}:mirrors"

    def shard_lease(self, shard: int) -> str:
        return f"{self._tag(shard)}:lease"

    def shard_fence(self, shard: int) -> str:
        return f"{self._tag(shard)}:fence"

    @property
    def dispatchers(self) -> str:
        return f"{self.prefix}:dispatchers"

    def dispatcher(self, dispatcher_id: str) -> str:
        return f"{self.prefix}:dispatcher:{dispatcher_id}"

    @property
    def campaigns(self) -> str:
        return f"{self.prefix}:campaigns"

    @property
    def campaigns_stopped(self) -> str:
        return f"{self.prefix}:campaigns:stopped"

    @property
    def campaigns_jitter(self) -> str:
        return f"{self.prefix}:campaigns:jitter"

    @property
    def campaigns_scheduled(self) -> str:
        return f"{self.prefix}:campaigns:scheduled"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{{{campaign_id}}}"

    def campaign_targets(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{{{campaign_id}}}:targets"

    def campaign_counts(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{{{campaign_id}}}:counts"

    def campaign_results(self, campaign_id: str) -> str:
        return f"{self.prefix}:campaign:{{{campaign_id}}}:results"

    def console_session(self, digest: str) -> str:
        return f"{self.prefix}:console:session:{digest}"

    def login_fails_user(self, digest: str) -> str:
        return f"{self.prefix}:console:fails:user:{digest}"

    def login_fails_ip(self, address: str) -> str:
        return f"{self.prefix}:console:fails:ip:{address}"

    def alerted(self, alert: str) -> str:
        return f"{self.prefix}:alerted:{alert}"

    def qr_login(self, app_id: str) -> str:
        return f"{self.prefix}:qrlogin:{{{app_id}}}"

    def qr_login_lock(self, app_id: str) -> str:
        return f"{self.prefix}:qrlogin:{{{app_id}}}:lock"

    def trends(self, minute: int) -> str:
        return f"{self.prefix}:trends:{minute}"
