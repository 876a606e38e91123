-- Dispatch from one lane of one shard's given accounts (the most overdue first) what the
-- gates of lib/gates.lua let through now. Each message moves from its lane to the
-- dispatched set with a lease and is returned for publishing onto the send queue; its
-- tokens are taken (and a bulk one paced) here, so the send task admits it at once. A
-- message of a paused or cancelled campaign is moved aside to the held set (a resume puts
-- it back in its place). Only the holder of the shard's lease may call it: the fencing
-- token is checked first, so a dispatcher that was paused past its lease dispatches nothing.
-- The shared buckets (the fleet's, each gateway's) are met as the shard's quotas of them.
-- uses: gcra
-- uses: gates
-- KEYS[1] = the shard's quota of the global bucket
-- KEYS[2] = this lane's ready set         KEYS[3] = dispatched set (leases)
-- KEYS[4] = waiting messages (bodies)
-- KEYS[5] = stopped campaigns, the shard's copy (hash: id -> paused | cancelled)
-- KEYS[6] = held messages (zset)          KEYS[7] = gateways marked down, the shard's copy
-- KEYS[8] = waiting messages' campaigns (hash: task id -> campaign id)
-- KEYS[9] = waiting messages to groups (set of task ids)
-- KEYS[10] = campaigns' own spacing, the shard's copy (hash: campaign id -> "MIN-MAX" s)
-- (every key is the shard's: one hash slot; wxtasks.mirrors keeps the copies)
-- KEYS[11] = the shard's lease (wx:{s}:lease: "<dispatcher id> <fence>")
-- KEYS[7 + 5i .. 11 + 5i] (i = 1..n) = account i's hash, bucket, lane, today's bulk count
--           (wx:{s}:bulkday:<appId>:<local date>), and the shard's quota of its gateway's
--           bucket (wx:{s}:quota:gw:<gateway>)
if redis.call('GET', KEYS[11]) ~= ARGV[18] then
  return {'fenced'}
end
local now = gcra_now(ARGV[1])       -- ms, or "" for Redis TIME
local lease = tonumber(ARGV[2])     -- ms
local g_grant, lapse_at = tonumber(ARGV[3]), tonumber(ARGV[4])  -- global tokens borrowed
local a_rate, a_burst = tonumber(ARGV[5]), tonumber(ARGV[6])  -- an account's defaults
local lane_name = ARGV[7]           -- interactive | bulk
local window = tonumber(ARGV[8])    -- the lane's window, ms
local max_n = tonumber(ARGV[9])     -- most messages to dispatch
local poll = tonumber(ARGV[10])     -- look again at a held account after, ms
local policy = read_policy(ARGV, 11)  -- ARGV[11..17]: the fleet's pacing defaults
-- ARGV[18] = the fencing token this caller holds the shard's lease with
local PER_ACCOUNT = 4  -- ARGV[19 + 4(i-1) ..]: appId, gateway, "1" when the gateway has a
                       -- limit of its own, gateway tokens borrowed for this call (once)
-- returns {now, wants, id, body, paid, id, body, paid, ...}; paid is "1" when the tokens
-- were taken; wants (JSON): per shared bucket ("global", "gw:<name>"), tokens the shard's
-- accounts could have used now beyond its quota (what its dispatcher borrows next), or
-- {"fenced"} when the caller does not hold the lease. An account that is RECONNECTING,
-- LOGGING_IN or on a gateway marked down is held
-- (only messages past their deadline leave, for the worker to fail); one that is IDLE,
-- ERROR or gone releases everything, since the send task fails it with the reason; one
-- whose gateway is not the one passed (it moved since the caller looked) waits for the
-- next call.
math.randomseed(policy.rand)
local reserve = lane_reserve(lane_name)
local paced = lane_name == BULK
local global = pool(KEYS[1], 'global_tokens', true, g_grant, lapse_at, now)
local gateway_pools = {}
local gateway_grants = {}  -- gateway -> tokens borrowed for this call (on any account's args)
for a = 19, #ARGV, PER_ACCOUNT do
  gateway_grants[ARGV[a + 1]] = (gateway_grants[ARGV[a + 1]] or 0) + tonumber(ARGV[a + 3])
end
local out = {tostring(now), ''}
local n = 0
local wants = {}
local function want(name, more)
  wants[name] = (wants[name] or 0) + more
end

-- the head of a lane that may go (a stopped campaign's messages are set aside, at most
-- SET_ASIDE a call, so that a paused 100,000-target campaign never blocks Redis): its id
-- and order (first enqueue, ms), or nil
local SET_ASIDE = 500
local set_aside = 0
local function next_message(lane)
  while set_aside < SET_ASIDE do
    local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
    if #head == 0 then
      return nil
    end
    if not gate_campaign(KEYS[5], redis.call('HGET', KEYS[8], head[1])) then
      return head[1], tonumber(head[2])
    end
    redis.call('ZREM', lane, head[1])
    redis.call('ZADD', KEYS[6], head[2], head[1])
    set_aside = set_aside + 1
  end
  return nil
end

local function take(lane, id, paid)
  redis.call('ZREM', lane, id)
  redis.call('ZADD', KEYS[3], now + lease, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[4], id) or ''
  out[#out + 1] = paid
  n = n + 1
end

for i = 1, (#ARGV - 18) / PER_ACCOUNT do
  if n >= max_n then
    break
  end
  local a = 19 + PER_ACCOUNT * (i - 1)
  local app, gateway = ARGV[a], ARGV[a + 1]
  local k = 11 + 5 * (i - 1)
  local hash, lane, day = KEYS[k + 1], KEYS[k + 3], KEYS[k + 4]
  local acct = read_account(hash, lane_name)
  local closed = gate_registered(acct, gateway)
  if not closed then
    closed = gate_state(acct, gateway, KEYS[7])
  end
  local next_at = nil  -- nil: keep its place (it is overdue and goes first next time)
  if closed == 'regateway' then
    next_at = now  -- nothing now: looked at again by the next call
  elseif not closed then
    local gw_pool = gateway_pools[gateway]
    if not gw_pool then
      gw_pool = pool(KEYS[k + 5], 'gateway_tokens', ARGV[a + 2] == '1', gateway_grants[gateway],
        lapse_at, now)
      gateway_pools[gateway] = gw_pool
    end
    local own = bucket(KEYS[k + 2], tonumber(acct.rate or '') or a_rate,
      tonumber(acct.burst or '') or a_burst, 'account_tokens', now)
    local buckets = {own, global, gw_pool}
    local sent_today = paced and tonumber(redis.call('GET', day) or '0') or 0
    local served = 0
    while n < max_n do
      local id, order = next_message(lane)
      if not id then
        break
      end
      if gate_deadline(now, order, window) then
        take(lane, id, '0')  -- no tokens for it: the send task fails it
      else
        if paced then
          local gate, opens = gate_pacing(acct, now, policy, sent_today)
          note_bulk_wait(acct, hash, gate)
          if gate then
            next_at = opens
            break
          end
        end
        local empty, wait = gate_buckets(buckets, now, reserve)
        if empty == 'account_tokens' then
          next_at = now + wait
          break
        elseif empty then
          -- held by a shared bucket's quota, the account keeps its place (most overdue
          -- first), so the accounts share the fleet's and their gateway's buckets fairly;
          -- what it could send now is what the shard asks to borrow: one for a paced lane
          -- that keeps a gap between sends, else what its own bucket and lane hold
          local could = 1
          local gapless = not paced
          if paced then
            local campaign = redis.call('HGET', KEYS[8], id)
            local _, hi = bulk_gap(acct, policy, redis.call('SISMEMBER', KEYS[9], id) == 1,
              campaign and redis.call('HGET', KEYS[10], campaign) or '')
            gapless = hi == 0
          end
          if gapless then
            could = math.max(1, math.min(math.floor(gcra_tokens(own.tat, now, own.rate,
              own.burst)), redis.call('ZCARD', lane)))
          end
          if global.tokens < 1 then
            want('global', could)
          end
          if gw_pool.rate > 0 and gw_pool.tokens < 1 then
            want('gw:' .. gateway, could)
          end
          break
        end
        take_tokens(buckets, now)
        take(lane, id, '1')
        served = served + 1
        if paced then
          local campaign = redis.call('HGET', KEYS[8], id)
          local jitter = campaign and redis.call('HGET', KEYS[10], campaign) or ''
          pace(acct, hash, day, now, policy, redis.call('SISMEMBER', KEYS[9], id) == 1, jitter)
          sent_today = sent_today + 1
        end
      end
    end
    if served > 0 and next_at == nil then
      next_at = now  -- served: behind the accounts still waiting for a shared token
    end
  elseif closed == 'account_waiting' or closed == 'gateway_down' then
    while n < max_n do
      local id, order = next_message(lane)
      if not id or not gate_deadline(now, order, window) then
        break
      end
      take(lane, id, '0')
    end
    next_at = now + poll
  else  -- unknown_account, account_unusable: the send task fails each with the reason
    while n < max_n do
      local id = next_message(lane)
      if not id then
        break
      end
      take(lane, id, '0')
    end
    next_at = now
  end
  if redis.call('EXISTS', lane) == 0 then
    redis.call('ZREM', KEYS[2], app)
  elseif next_at then
    redis.call('ZADD', KEYS[2], next_at, app)
  end
end
if next(wants) ~= nil then
  out[2] = cjson.encode(wants)
end
return out
