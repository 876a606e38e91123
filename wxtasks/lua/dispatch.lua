-- Dispatch from one lane of the given accounts (the most overdue first) what the buckets
-- and the accounts' pacing allow now. Each message moves from its lane to the dispatched
-- set with a lease and is returned for publishing onto the send queue. Its tokens are
-- taken here, so the send task admits it at once; the bulk lane leaves `reserve` tokens
-- in each bucket for replies. A message of a paused or cancelled campaign is moved aside
-- to the held set instead (a resume puts it back in its place).
-- uses: gcra
-- KEYS[1] = global bucket                 KEYS[2] = this lane's ready set
-- KEYS[3] = dispatched set (leases)       KEYS[4] = waiting messages (bodies)
-- KEYS[5] = stopped campaigns (hash: id -> paused | cancelled)
-- KEYS[6] = held messages (zset)
-- KEYS[7] = gateways marked down (set)
-- KEYS[3 + 5i .. 7 + 5i] (i = 1..n) = account i's hash, bucket, lane, today's bulk count
--           (wx:bulkday:{appId}:<date>), and its gateway's bucket (wx:bucket:gw:<name>;
--           shared by the gateway's accounts, so not in the account's hash slot)
-- ARGV[1] = now ms, or "" for Redis TIME    ARGV[2] = lease, ms
-- ARGV[3] = global rate   ARGV[4] = global burst
-- ARGV[5] = default account rate   ARGV[6] = default account burst
-- ARGV[7] = tokens to leave in each bucket  ARGV[8] = the lane's window, ms
-- ARGV[9] = most messages to dispatch       ARGV[10] = look again at a held account after, ms
-- ARGV[11] = a random seed (jitter)    ARGV[12] = "1" when the lane is paced (bulk)
-- ARGV[13 + 10(i-1) .. 22 + 10(i-1)] = account i's appId; its pacing gate: open at (ms,
--           0 = open), sends left today (-1 = no cap); spacing between private recipients
--           min, max (ms); between groups min, max (ms); its gateway's name, rate, burst
-- returns {now, id, body, paid, id, body, paid, ...}; paid is "1" when the tokens were
-- taken. An account that is RECONNECTING or LOGGING_IN is held (only messages past their
-- deadline leave, for the worker to fail); one that is IDLE, ERROR or gone releases
-- everything, since the send task fails it with the reason. An account whose gateway is
-- marked down is held like a RECONNECTING one; one whose gateway is not the one passed
-- (it moved since the caller looked) is left for the next call.
local now = gcra_now(ARGV[1])
local lease, window = tonumber(ARGV[2]), tonumber(ARGV[8])
local g_rate, g_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local reserve, max_n, poll = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[10])
math.randomseed(tonumber(ARGV[11]))
local paced = ARGV[12] == '1'
local g_tat = gcra_tat(KEYS[1], now)
local out = {tostring(now)}
local n = 0
local PER = 10

-- the next message of a lane that may go (a stopped campaign's are set aside, at most
-- SET_ASIDE a call, so that a paused 100,000-target campaign never blocks Redis), or nil
local SET_ASIDE = 500
local set_aside = 0
local function next_message(lane)
  while set_aside < SET_ASIDE do
    local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
    if #head == 0 then
      return nil
    end
    local body = redis.call('HGET', KEYS[4], head[1])
    local campaign = body and string.match(body, '"campaign":"([^"]+)"')
    if body and not (campaign and redis.call('HEXISTS', KEYS[5], campaign) == 1) then
      return head[1], body, tonumber(head[2])
    end
    redis.call('ZREM', lane, head[1])
    if body then
      redis.call('ZADD', KEYS[6], head[2], head[1])
    end
    set_aside = set_aside + 1
  end
  return nil
end

local function take(lane, id, body, paid)
  redis.call('ZREM', lane, id)
  redis.call('ZADD', KEYS[3], now + lease, id)
  out[#out + 1] = id
  out[#out + 1] = body
  out[#out + 1] = paid
  n = n + 1
end

local function spacing(body, lo, hi, group_lo, group_hi)
  local jitter_lo, jitter_hi = string.match(body, '"jitter":"([%d.]+)%-([%d.]+)"')
  if jitter_lo then
    lo, hi = tonumber(jitter_lo) * 1000, tonumber(jitter_hi) * 1000
  elseif string.find(body, '@chatroom"', 1, true) then
    lo, hi = group_lo, group_hi
  end
  return lo + (hi - lo) * math.random()
end

for i = 1, (#ARGV - 12) / PER do
  if n >= max_n then
    break
  end
  local a = 13 + PER * (i - 1)
  local app = ARGV[a]
  local open_at, left = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local hash, bucket, lane, today = KEYS[3 + 5 * i], KEYS[4 + 5 * i], KEYS[5 + 5 * i],
    KEYS[6 + 5 * i]
  local gw_bucket, gw, gw_rate, gw_burst = KEYS[7 + 5 * i], ARGV[a + 7], tonumber(ARGV[a + 8]),
    tonumber(ARGV[a + 9])
  local acct = redis.call('HMGET', hash, 'state', 'rate', 'burst', 'bulk_next_at', 'gateway')
  local state = acct[1]
  local next_at = nil  -- nil: keep its place (it is overdue and goes first next time)
  if state and (acct[5] or 'default') ~= gw then
    state = 'MOVED'
    next_at = now
  elseif state == 'ONLINE' and redis.call('SISMEMBER', KEYS[7], gw) == 1 then
    state = 'GATEWAY_DOWN'
  end
  if state == 'MOVED' then  -- nothing now: looked at again by the next call
  elseif state == 'ONLINE' then
    local rate = tonumber(acct[2] or '') or tonumber(ARGV[5])
    local burst = tonumber(acct[3] or '') or tonumber(ARGV[6])
    local paced_at = 0
    if paced then
      paced_at = math.max(open_at, tonumber(acct[4] or '0') or 0)
    end
    local a_tat = gcra_tat(bucket, now)
    -- a gateway rate of 0: its bucket is no tighter than the fleet's and is skipped
    local gw_tat = 0
    if gw_rate > 0 then
      gw_tat = gcra_tat(gw_bucket, now)
    end
    local served = 0
    while n < max_n do
      if paced_at > now then
        next_at = paced_at
        break
      end
      if left == 0 then
        next_at = now + 60000  -- today's cap is reached; the gate says when it reopens
        break
      end
      local a_wait = gcra_wait(a_tat, now, rate, burst, reserve)
      if a_wait > 0 then
        next_at = now + a_wait
        break
      end
      -- like the global bucket: an account held by its gateway's bucket keeps its place
      -- (most overdue first), so the gateway's accounts share it fairly
      if gw_rate > 0 and gcra_wait(gw_tat, now, gw_rate, gw_burst, reserve) > 0 then
        break
      end
      if gcra_wait(g_tat, now, g_rate, g_burst, reserve) > 0 then
        break
      end
      local id, body = next_message(lane)
      if not id then
        break
      end
      a_tat = gcra_take(bucket, a_tat, now, rate)
      if gw_rate > 0 then
        gw_tat = gcra_take(gw_bucket, gw_tat, now, gw_rate)
      end
      g_tat = gcra_take(KEYS[1], g_tat, now, g_rate)
      take(lane, id, body, '1')
      served = served + 1
      if left > 0 then
        left = left - 1
        redis.call('INCR', today)
        redis.call('EXPIRE', today, 172800)
      end
      local gap = 0
      if paced then
        gap = spacing(body, tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]),
          tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]))
      end
      if gap > 0 then
        paced_at = now + gap
        redis.call('HSET', hash, 'bulk_next_at', tostring(paced_at))
      end
    end
    if served > 0 and next_at == nil then
      next_at = now  -- served: behind the accounts still waiting for a global token
    end
  elseif state == 'RECONNECTING' or state == 'LOGGING_IN' or state == 'GATEWAY_DOWN' then
    while n < max_n do
      local id, body, order = next_message(lane)
      if not id or order + window >= now then
        break
      end
      take(lane, id, body, '0')
    end
    next_at = now + poll
  else
    while n < max_n do
      local id, body = next_message(lane)
      if not id then
        break
      end
      take(lane, id, body, '0')
    end
    next_at = now
  end
  if redis.call('EXISTS', lane) == 0 then
    redis.call('ZREM', KEYS[2], app)
  elseif next_at then
    redis.call('ZADD', KEYS[2], next_at, app)
  end
end
return out
