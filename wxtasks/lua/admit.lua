-- Admit one send: every gate of lib/gates.lua open, then take the tokens, pace a bulk send
-- and claim the dedup key. All or nothing.
-- uses: gcra
-- uses: gates
-- KEYS[1] = account hash              (wx:{s}:acct:<appId>)
-- KEYS[2] = account bucket            (wx:{s}:bucket:<appId>)
-- KEYS[3] = global bucket             (wx:bucket:global)
-- KEYS[4] = send claim                (wx:{s}:claim:<appId>:<digest>)
-- KEYS[5] = the message's lane        (wx:{s}:outbox:<appId>:<lane>)
-- KEYS[6] = first-seen mark           (wx:{s}:seen:<appId>:<task id>)
-- KEYS[7] = stopped campaigns         (wx:campaigns:stopped)  hash: id -> paused|cancelled
-- KEYS[8] = the account's gateway's bucket (wx:bucket:gw:<gateway>)
-- KEYS[9] = gateways marked down      (wx:gateways:down)  set
-- KEYS[10] = the account's bulk sends today (wx:{s}:bulkday:<appId>:<YYYYMMDD>, local day)
-- KEYS[11] = campaigns' own spacing   (wx:campaigns:jitter)  hash: id -> "MIN-MAX" s
--   KEYS[3], [7], [8], [9], [11] are not in the account's hash slot: a gateway's bucket
--   and the fleet's are shared by many accounts.
local owner = ARGV[1]               -- the task id
local claim_ttl = tonumber(ARGV[2]) -- s
local g_rate, g_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local a_rate, a_burst = tonumber(ARGV[5]), tonumber(ARGV[6])  -- an account's defaults
local now = gcra_now(ARGV[7])       -- ms; "" for Redis TIME (one clock for every host)
local enqueued = ARGV[8]            -- first enqueued, ms; "": the first sighting counts
local window = tonumber(ARGV[9])    -- the lane's window, ms
local lane = ARGV[10]               -- interactive | bulk
local fresh = ARGV[11] == '1'       -- it comes fresh (not from the outbox): FIFO applies
local paid_at = ARGV[12]            -- when the dispatcher took its tokens (ms), or ""
local hold = tonumber(ARGV[13])     -- how long an admitted send may take, ms (claim hold)
local campaign = ARGV[14]           -- the campaign it is a target of, or ""
local paid_fresh = tonumber(ARGV[15])  -- how long a dispatch's payment stays good, ms
local gateway = ARGV[16]            -- the gateway the caller believes serves the account
local gw_rate, gw_burst = tonumber(ARGV[17]), tonumber(ARGV[18])  -- 0: never binds
local to_group = ARGV[19] == '1'    -- its recipient is a group (…@chatroom)
local policy = read_policy(ARGV, 20)  -- ARGV[20..26]: the fleet's pacing defaults
-- returns {answer, detail, ms, enqueued[, owner, status, msgId, newMsgId, createTime]}:
--   answer: one of lib/gates.lua's ANSWERS; detail: the account's state, the gateway or
--   the campaign the answer is about; ms: how long until it may go (a wait), or a
--   redelivered claim's hold left; enqueued: the message's first enqueue (ms); the claim's
--   fields for duplicate and redelivered. Nothing is taken unless the answer is admitted.

local acct = read_account(KEYS[1], lane)
local closed = gate_registered(acct, gateway)
if closed then
  return {closed, acct.gateway or 'default', 0, ''}
end

local seen = enqueued ~= ''
if not seen then
  enqueued = redis.call('GET', KEYS[6]) or tostring(now)
end
-- a message with no enqueue time of its own keeps its first sighting, unless it goes out now
local function answer(what, detail, ms)
  if not seen then
    redis.call('SET', KEYS[6], enqueued, 'PX', math.ceil(window), 'NX')
  end
  return {what, detail or '', tostring(math.ceil(ms or 0)), enqueued}
end

local claim = redis.call('HMGET', KEYS[4], 'owner', 'status', 'msgId', 'newMsgId', 'createTime',
  'hold_until')
if claim[1] then
  local reply = answer('duplicate')
  if claim[1] == owner then
    reply = answer('redelivered', '', math.max(0, (tonumber(claim[6] or '0') or 0) - now))
  end
  for i = 1, 5 do
    reply[#reply + 1] = claim[i] or ''
  end
  return reply
end

closed = gate_campaign(KEYS[7], campaign)
if closed then
  return answer(closed, campaign)
end
closed = gate_deadline(now, tonumber(enqueued), window)
if closed then
  return answer(closed)
end
closed = gate_state(acct, gateway, KEYS[9])
if closed then
  return answer(closed, closed == 'gateway_down' and gateway or acct.state)
end
if fresh and redis.call('EXISTS', KEYS[5]) == 1 then
  return answer('behind')
end

-- a dispatched message passed the pacing gates when the dispatcher took it
local paced = lane == BULK and paid_at == ''
if paced then
  local opens
  closed, opens = gate_pacing(acct, now, policy, tonumber(redis.call('GET', KEYS[10]) or '0'))
  note_bulk_wait(acct, KEYS[1], closed)
  if closed then
    return answer(closed, '', opens - now)
  end
end

-- paid for by the dispatcher, unless that was too long ago (it sat in the broker: then it
-- must not burst out with others like it, and the buckets decide again)
if paid_at == '' or now - tonumber(paid_at) > paid_fresh then
  local buckets = {
    bucket(KEYS[2], tonumber(acct.rate or '') or a_rate, tonumber(acct.burst or '') or a_burst,
      'account_tokens', now),
    bucket(KEYS[3], g_rate, g_burst, 'global_tokens', now),
    bucket(KEYS[8], gw_rate, gw_burst, 'gateway_tokens', now),
  }
  local empty, wait = gate_buckets(buckets, now, lane_reserve(lane))
  if empty then
    return answer(empty, '', wait)
  end
  take_tokens(buckets, now)
end
if paced then
  math.randomseed(policy.rand)
  local jitter = campaign ~= '' and redis.call('HGET', KEYS[11], campaign) or ''
  pace(acct, KEYS[1], KEYS[10], now, policy, to_group, jitter)
end

redis.call('HSET', KEYS[4], 'owner', owner, 'status', 'inflight', 'at', tostring(now),
  'hold_until', tostring(now + hold))
redis.call('EXPIRE', KEYS[4], claim_ttl)
return {'admitted', '', '0', enqueued}
