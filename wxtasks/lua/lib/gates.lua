-- gates: every rule a message meets before it may go to the gateway, written once.
-- admit.lua (a send task asking for one message) and dispatch.lua (the dispatcher taking
-- messages from the outbox) both use it; scripts.py puts it in front of each script whose
-- header says "-- uses: gates" (after gcra, which it needs).
--
-- Each gate says nil (open) or one of the answers below. Python knows the gates only by
-- these names: wxtasks.send.gates.Answer has exactly them (a test reads this table).
local ANSWERS = {
  'admitted',           -- every gate open: tokens taken, claim made
  'unknown_account',    -- the appId is not registered
  'regateway',          -- the caller named another gateway than the account's (stale guess)
  'duplicate',          -- another task's claim: the same message went out already
  'redelivered',        -- this task's own claim: a redelivery
  'campaign_paused',    -- its campaign is paused
  'campaign_cancelled', -- its campaign is cancelled
  'expired',            -- past its lane's window from its first enqueue
  'account_waiting',    -- RECONNECTING or LOGGING_IN: it comes back by itself
  'account_unusable',   -- IDLE or ERROR: it cannot send until someone logs it in
  'gateway_down',       -- its gateway is marked down
  'behind',             -- older messages wait in its lane (FIFO)
  'account_tokens',     -- the account's bucket is empty for now
  'gateway_tokens',     -- its gateway's bucket is empty for now
  'global_tokens',      -- the fleet's bucket is empty for now
  'spacing',            -- bulk: the gap after the account's last bulk send
  'quiet_hours',        -- bulk: inside the account's quiet hours
  'warmup',             -- bulk: warm-up after a new-device login
  'daily_cap',          -- bulk: the account's daily bulk cap is reached
  'cooloff',            -- bulk: the circuit breaker cooled the account's bulk lane off
  'bad_pacing',         -- bulk: the account's own pacing setting cannot be read
}

local BULK = 'bulk'
local DAY_MS = 86400000
-- a closed pacing gate whose setting cannot be read is looked at again after this long
local BAD_PACING_RETRY_MS = 60000

-- the bulk lane leaves one token in each bucket, so a reply always finds one
local function lane_reserve(lane)
  if lane == BULK then
    return 1
  end
  return 0
end

-- the account fields the gates read, in one HMGET (the pacing ones only for bulk)
local ACCOUNT_FIELDS = {'state', 'rate', 'burst', 'gateway', 'bulk_wait', 'bulk_next_at',
  'bulk_cooloff_until', 'first_login_at', 'warmup_s', 'daily_bulk_cap', 'quiet_hours',
  'bulk_jitter', 'group_jitter'}
local function read_account(key, lane)
  local n = 4
  if lane == BULK then
    n = #ACCOUNT_FIELDS
  end
  local v = redis.call('HMGET', key, unpack(ACCOUNT_FIELDS, 1, n))
  local a = {}
  for i = 1, n do
    a[ACCOUNT_FIELDS[i]] = v[i]
  end
  return a
end

-- registered, and on the gateway the caller named
local function gate_registered(acct, gateway)
  if not acct.state then
    return 'unknown_account'
  end
  if (acct.gateway or 'default') ~= gateway then
    return 'regateway'
  end
  return nil
end

-- ONLINE, on a gateway that is up
local function gate_state(acct, gateway, gateways_down)
  if acct.state == 'RECONNECTING' or acct.state == 'LOGGING_IN' then
    return 'account_waiting'
  end
  if acct.state ~= 'ONLINE' then
    return 'account_unusable'
  end
  if redis.call('SISMEMBER', gateways_down, gateway) == 1 then
    return 'gateway_down'
  end
  return nil
end

local function gate_campaign(stopped, campaign)
  if not campaign or campaign == '' then
    return nil
  end
  local how = redis.call('HGET', stopped, campaign)
  if how == 'paused' then
    return 'campaign_paused'
  elseif how == 'cancelled' then
    return 'campaign_cancelled'
  end
  return nil
end

local function gate_deadline(now, enqueued, window)
  if now > enqueued + window then
    return 'expired'
  end
  return nil
end

-- a bucket as the gates see it; a rate of 0 never binds (a gateway no tighter than the fleet)
local function bucket(key, rate, burst, answer, now)
  local b = {key = key, rate = rate, burst = burst, answer = answer, tat = 0}
  if rate > 0 then
    b.tat = gcra_tat(key, now)
  end
  return b
end

-- a shard's quota of a shared bucket, as the gates see it: tokens its dispatcher borrowed
-- from the bucket (wxtasks.send.quotas); `grant` more were borrowed just now and lapse at
-- `lapse_at` (ms), so a token is spent within one refill period of leaving the shared
-- bucket or never. `limited` false: the bucket does not bind (a gateway of no own limit).
local function pool(key, answer, limited, grant, lapse_at, now)
  local p = {key = key, answer = answer, pool = true, rate = 0, tokens = 0}
  if not limited then
    return p
  end
  p.rate = 1
  p.tokens = tonumber(redis.call('GET', key) or '0')
  if grant > 0 and lapse_at > now then
    p.tokens = p.tokens + grant
    redis.call('SET', key, p.tokens, 'PX', math.ceil(lapse_at - now))
  end
  return p
end

-- a quota with no token holds until its dispatcher borrows more (the next call, ms away)
local POOL_EMPTY_MS = 1e9

-- buckets in the order a tie is told: {account, global, gateway}. nil when each has a
-- token (leaving `reserve`), else the answer of the one that holds longest, and ms
local function gate_buckets(buckets, now, reserve)
  local answer, longest = nil, 0
  for _, b in ipairs(buckets) do
    if b.rate > 0 then
      local wait
      if b.pool then
        wait = b.tokens >= 1 and 0 or POOL_EMPTY_MS
      else
        wait = gcra_wait(b.tat, now, b.rate, b.burst, reserve)
      end
      if wait > longest then
        answer, longest = b.answer, wait
      end
    end
  end
  return answer, longest
end

local function take_tokens(buckets, now)
  for _, b in ipairs(buckets) do
    if b.pool then
      if b.rate > 0 then
        b.tokens = b.tokens - 1
        redis.call('DECR', b.key)
      end
    elseif b.rate > 0 then
      b.tat = gcra_take(b.key, b.tat, now, b.rate)
    end
  end
end

-- the fleet's pacing defaults, from 9 ARGV values starting at i (see wxtasks.send.pacing)
local function read_policy(argv, i)
  return {
    tz_offset = tonumber(argv[i]),          -- ms the fleet's time zone is ahead of UTC now
    quiet = argv[i + 1],                     -- "HH:MM-HH:MM" or "" (none)
    warmup_ms = tonumber(argv[i + 2]),
    daily_cap = tonumber(argv[i + 3]),       -- 0: no cap
    bulk_jitter = argv[i + 4],               -- "MIN-MAX" seconds, to a person
    group_jitter = argv[i + 5],              -- "MIN-MAX" seconds, to a group
    rand = tonumber(argv[i + 6]),            -- a seed for the spacing's random gap
  }
end
local POLICY_ARGS = 7

-- "MIN-MAX" seconds -> lo, hi ms; nil when it cannot be read
local function span_ms(text)
  local lo, hi = string.match(text or '', '^%s*([%d.]+)%s*%-%s*([%d.]+)%s*$')
  lo, hi = tonumber(lo), tonumber(hi)
  if not lo or not hi or lo > hi then
    return nil
  end
  return lo * 1000, hi * 1000
end

-- when the quiet window around `now` ends (ms), or nil outside it; false: unreadable
local function quiet_ends(text, now, tz_offset)
  if text == '' then
    return nil
  end
  local h1, m1, h2, m2 = string.match(text, '^%s*(%d+):(%d+)%s*%-%s*(%d+):(%d+)%s*$')
  if not h1 then
    return false
  end
  local from = (tonumber(h1) * 60 + tonumber(m1)) * 60000
  local to = (tonumber(h2) * 60 + tonumber(m2)) * 60000
  local since_midnight = (now + tz_offset) % DAY_MS
  local midnight = now - since_midnight
  if from == to then
    return nil
  elseif from < to then
    if since_midnight >= from and since_midnight < to then
      return midnight + to
    end
  elseif since_midnight >= from then  -- wraps midnight: 22:00-06:00
    return midnight + DAY_MS + to
  elseif since_midnight < to then
    return midnight + to
  end
  return nil
end

-- the bulk pacing gate of an account now: nil when open, else the answer and when it
-- opens (ms). The latest closed gate is the one that counts. `sent_today`: bulk sends of
-- the account's local day so far.
local function gate_pacing(acct, now, policy, sent_today)
  local closed, opens = nil, 0
  local function close(answer, at)
    if at > now and at > opens then
      closed, opens = answer, at
    end
  end
  close('cooloff', (tonumber(acct.bulk_cooloff_until) or 0) * 1000)
  local warmup = policy.warmup_ms
  if acct.warmup_s and acct.warmup_s ~= '' then
    warmup = (tonumber(acct.warmup_s) or -1) * 1000
  end
  local first_login = (tonumber(acct.first_login_at) or 0) * 1000
  if warmup > 0 and first_login > 0 then
    close('warmup', first_login + warmup)
  end
  local quiet = policy.quiet
  if acct.quiet_hours then
    quiet = acct.quiet_hours
  end
  local quiet_end = quiet_ends(quiet, now, policy.tz_offset)
  if quiet_end then
    close('quiet_hours', quiet_end)
  end
  local cap = policy.daily_cap
  if acct.daily_bulk_cap and acct.daily_bulk_cap ~= '' then
    cap = tonumber(acct.daily_bulk_cap) or -1
  end
  if cap > 0 and sent_today >= cap then
    close('daily_cap', now - (now + policy.tz_offset) % DAY_MS + DAY_MS)
  end
  close('spacing', tonumber(acct.bulk_next_at) or 0)
  if quiet_end == false or warmup < 0 or cap < 0
      or (acct.bulk_jitter and acct.bulk_jitter ~= '' and not span_ms(acct.bulk_jitter))
      or (acct.group_jitter and acct.group_jitter ~= '' and not span_ms(acct.group_jitter)) then
    close('bad_pacing', now + BAD_PACING_RETRY_MS)
  end
  return closed, opens
end

-- the gap an account's bulk sends keep (lo, hi ms; nil when it cannot be read): the
-- campaign's own jitter, else the account's (or the fleet's) for a group or for a person
local function bulk_gap(acct, policy, to_group, campaign_jitter)
  local lo, hi = span_ms(campaign_jitter)
  if not lo then
    if to_group then
      lo, hi = span_ms(acct.group_jitter ~= '' and acct.group_jitter or policy.group_jitter)
    else
      lo, hi = span_ms(acct.bulk_jitter ~= '' and acct.bulk_jitter or policy.bulk_jitter)
    end
  end
  return lo, hi
end

-- after a bulk send was let through: count it for the day and draw the gap before the
-- account's next one (from now, and again from when it comes back from the gateway). The gap: the campaign's own jitter, else the account's (or the
-- fleet's) for a group or for a person.
local function pace(acct, hash, day_key, now, policy, to_group, campaign_jitter)
  redis.call('INCR', day_key)
  redis.call('PEXPIRE', day_key, 2 * DAY_MS)
  local lo, hi = bulk_gap(acct, policy, to_group, campaign_jitter)
  if lo and hi > 0 then
    local gap = lo + (hi - lo) * math.random()
    acct.bulk_next_at = tostring(now + gap)
    -- the gap is kept too: finish.lua counts it again from when the send came back, so
    -- the gateway never sees two bulk sends of the account closer than it
    redis.call('HSET', hash, 'bulk_next_at', acct.bulk_next_at, 'bulk_gap', tostring(gap))
  end
end

-- keep the reason a closed pacing gate gives on the account, for operators (only when it
-- changed: "" once it is open again)
local function note_bulk_wait(acct, hash, answer)
  answer = answer or ''
  if (acct.bulk_wait or '') ~= answer then
    acct.bulk_wait = answer
    redis.call('HSET', hash, 'bulk_wait', answer)
  end
end
