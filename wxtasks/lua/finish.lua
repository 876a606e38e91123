-- Record how one message ended, every record of it at once: its outcome on its send claim,
-- the count, the dead letter, the outbox forgetting it, its campaign's record, the bulk
-- breaker's reset, and an event for an ending an operator may act on. Every way a message
-- ends (the send task, an operator's cancel, a campaign's cancel) comes through here.
-- KEYS[1] = send counts               (wx:stats:sends)  hash: status -> n
-- KEYS[2] = dead letters              (wx:deadletters)  KEYS[3] = their order (zset)
-- KEYS[4] = waiting messages          (wx:{s}:outbox:messages)
-- KEYS[5] = dispatched messages       (wx:{s}:outbox:inflight)
-- KEYS[6] = waiting messages' campaigns (wx:{s}:outbox:campaign_of)
-- KEYS[7] = waiting messages to groups (wx:{s}:outbox:to_group)
-- KEYS[8] = the events stream         (wx:events)
-- KEYS[9] = this minute's trend bucket (wx:trends:<minute>, the console's Overview)
-- then, in this order, only those the ARGV flags ask for:
--   its send claim (wx:{s}:claim:<appId>:<digest>)                        when ARGV[4] ~= ""
--   its campaign, counts and outcomes (wx:campaign:{id}[:counts|:results])  ARGV[9] ~= ""
--   its account (wx:{s}:acct:<appId>), a bulk send that went out           ARGV[12] == "1"
--     (its breaker's count starts over; its next bulk send waits its gap from now)
local task_id = ARGV[1]
local status = ARGV[2]           -- sent | duplicate | failed | unknown | cancelled
local now = ARGV[3]              -- unix seconds
local claim_status = ARGV[4]     -- "" | sent | unknown: record it on the claim
local ids = {ARGV[5], ARGV[6], ARGV[7]}  -- msgId, newMsgId, createTime
local dead_letter = ARGV[8]      -- the dead letter's JSON, or ""
local campaign = ARGV[9]         -- the campaign it is a target of, or ""
local index = ARGV[10]           -- its index in the campaign
local outcome = ARGV[11]         -- its outcome as the campaign's report shows it (JSON)
local bulk_sent = ARGV[12] == '1'
local app_id = ARGV[13]
local reason = ARGV[14]          -- why it ended so (failed, unknown, cancelled)
local events_maxlen = tonumber(ARGV[15])
local gateway = ARGV[16]         -- the gateway its account is on ("": not known)
local trend_ttl = tonumber(ARGV[17])
local from_outbox = ARGV[18] == '1'  -- it was dispatched from the outbox, which forgets it
-- returns {ended, total} of its campaign after this record ({} when not a target, or when
-- the target had ended already: the first outcome stands)

local k = 10
if claim_status ~= '' then
  if redis.call('HGET', KEYS[k], 'owner') == task_id then
    redis.call('HSET', KEYS[k], 'status', claim_status, 'msgId', ids[1], 'newMsgId', ids[2],
      'createTime', ids[3])
  end
  k = k + 1
end

redis.call('HINCRBY', KEYS[1], status, 1)
-- the Overview's per-minute trend; its TTL is set when a count is born (a new minute)
if redis.call('HINCRBY', KEYS[9], 'send:' .. status, 1) == 1 then
  redis.call('EXPIRE', KEYS[9], trend_ttl)
end
if gateway ~= '' then redis.call('HINCRBY', KEYS[9], 'gw:' .. gateway, 1) end
if dead_letter ~= '' then
  redis.call('HSET', KEYS[2], task_id, dead_letter)
  redis.call('ZADD', KEYS[3], now, task_id)
  redis.call('HINCRBY', KEYS[9], 'deadletters', 1)
end
if from_outbox then  -- a message that never waited has nothing there
  redis.call('HDEL', KEYS[4], task_id)
  redis.call('ZREM', KEYS[5], task_id)
  redis.call('HDEL', KEYS[6], task_id)
  redis.call('SREM', KEYS[7], task_id)
end
if status == 'failed' or status == 'unknown' or status == 'cancelled' then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', events_maxlen, '*', 'kind', 'ended',
    'task_id', task_id, 'status', status, 'app_id', app_id, 'campaign', campaign,
    'reason', reason, 'at', now)
end

local reply = {}
if campaign ~= '' then
  local meta, counts, results = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if redis.call('HSETNX', results, index, outcome) == 1 then
    redis.call('HINCRBY', counts, status, 1)
    redis.call('HINCRBY', counts, app_id .. '|' .. status, 1)
    if status == 'sent' then
      redis.call('HSET', meta, 'last_sent_at', now)
    end
    local ended = redis.call('HINCRBY', meta, 'ended', 1)
    reply = {ended, tonumber(redis.call('HGET', meta, 'total') or '0')}
  end
end
if bulk_sent then
  local acct = redis.call('HMGET', KEYS[k], 'bulk_errors', 'bulk_gap', 'bulk_next_at')
  -- the breaker counts bulk errors in a row: this one went out
  if acct[1] and acct[1] ~= '0' then
    redis.call('HSET', KEYS[k], 'bulk_errors', '0')
  end
  -- the account's next bulk send waits its gap from now, when this one came back: a send
  -- that took long at the gateway must not bring the next one closer to it there
  local gap = tonumber(acct[2] or '')
  if gap then
    local t = redis.call('TIME')
    local back = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
    if back + gap > (tonumber(acct[3] or '') or 0) then
      redis.call('HSET', KEYS[k], 'bulk_next_at', tostring(back + gap))
    end
  end
end
return reply
