-- Admit one send: the account is ONLINE, its gateway is not down, the message is no
-- duplicate and not past its deadline, nothing older waits in its lane, and the account's,
-- its gateway's AND the global bucket have a token; then take the three tokens and claim
-- the dedup key. All or nothing.
-- uses: gcra
-- KEYS[1] = account hash              (wx:acct:{appId})
-- KEYS[2] = account bucket            (wx:bucket:{appId})
-- KEYS[3] = global bucket             (wx:bucket:global)
-- KEYS[4] = send claim                (wx:claim:{appId}:<digest>)
-- KEYS[5] = the message's lane        (wx:outbox:{appId}:<lane>)
-- KEYS[6] = first-seen mark           (wx:seen:{appId}:<task id>)
-- KEYS[7] = stopped campaigns         (wx:campaigns:stopped)  hash: id -> paused|cancelled
-- KEYS[8] = the account's gateway's bucket (wx:bucket:gw:<gateway>)
-- KEYS[9] = gateways marked down      (wx:gateways:down)  set
--   KEYS[3], [7], [8], [9] are not in the account's hash slot: like the global bucket, a
--   gateway's bucket is shared by many accounts. On Redis Cluster these scripts would need
--   the shared keys moved into one slot with the account's (not done: Sentinel is the HA
--   story, see the README).
-- ARGV[1] = owner: the task id
-- ARGV[2] = claim TTL, seconds
-- ARGV[3] = global rate, per second     ARGV[4] = global burst
-- ARGV[5] = default account rate        ARGV[6] = default account burst
-- ARGV[7] = now in milliseconds, or "" for Redis TIME (one clock for every host)
-- ARGV[8] = first enqueued, ms, or "" when the message does not say: then the first time
--           any process saw it counts (kept in KEYS[6] for the lane's window)
-- ARGV[9] = the lane's window, ms (a message older than this is past its deadline)
-- ARGV[10] = tokens to leave in each bucket (bulk: 1, so a reply always finds one)
-- ARGV[11] = "1" when the message comes fresh (it queues behind waiting ones in its lane)
-- ARGV[12] = when the dispatcher took its tokens (Redis time, ms), or "": paid for when
--           that was at most ARGV[15] ms ago (else it sat in the broker and must not
--           burst out with others like it: the buckets decide again)
-- ARGV[13] = how long an admitted send may take, ms (its claim's hold)
-- ARGV[14] = the message's campaign id, or ""
-- ARGV[15] = how long a dispatch's payment stays good, ms
-- ARGV[16] = the gateway the caller believes serves the account (its KEYS[8] is that one's)
-- ARGV[17] = that gateway's rate, per second (0: no tighter than the fleet's, not
--           checked)   ARGV[18] = its burst
-- returns {"admitted", enqueued}
--       | {"unknown_account"}
--       | {"expired", enqueued}
--       | {"duplicate", owner, status, msgId, newMsgId, createTime}  another task's claim
--       | {"redelivered", status, msgId, newMsgId, createTime, hold_left_ms}  this task's
--       | {"not_online", state, enqueued}
--       | {"stopped", paused|cancelled, enqueued}   its campaign was paused or cancelled
--       | {"wait", ms, why, enqueued}  why: account | gateway | global | behind; nothing
--         taken
--       | {"regateway", gateway}  the account is on another gateway than ARGV[16] says (the
--         caller's guess is stale): nothing done; ask again with that gateway's keys
--       | {"gateway_down", enqueued}  its gateway is marked down: park, do not call it
local acct = redis.call('HMGET', KEYS[1], 'state', 'rate', 'burst', 'gateway')
if not acct[1] then
  return {'unknown_account'}
end
if (acct[4] or 'default') ~= ARGV[16] then
  return {'regateway', acct[4] or 'default'}
end
local now = gcra_now(ARGV[7])

local enqueued = ARGV[8]
if enqueued == '' then
  enqueued = redis.call('GET', KEYS[6])
  if not enqueued then
    enqueued = tostring(now)
    redis.call('SET', KEYS[6], enqueued, 'PX', math.ceil(tonumber(ARGV[9])))
  end
end

local claim = redis.call('HMGET', KEYS[4], 'owner', 'status', 'msgId', 'newMsgId', 'createTime',
  'hold_until')
if claim[1] then
  if claim[1] ~= ARGV[1] then
    return {'duplicate', claim[1], claim[2] or '', claim[3] or '', claim[4] or '', claim[5] or ''}
  end
  local hold_left = math.max(0, math.ceil((tonumber(claim[6] or '0') or 0) - now))
  return {'redelivered', claim[2] or '', claim[3] or '', claim[4] or '', claim[5] or '',
    tostring(hold_left)}
end

if ARGV[14] ~= '' then
  local stopped = redis.call('HGET', KEYS[7], ARGV[14])
  if stopped then
    return {'stopped', stopped, enqueued}
  end
end
if now > tonumber(enqueued) + tonumber(ARGV[9]) then
  return {'expired', enqueued}
end
if acct[1] ~= 'ONLINE' then
  return {'not_online', acct[1], enqueued}
end
if redis.call('SISMEMBER', KEYS[9], ARGV[16]) == 1 then
  return {'gateway_down', enqueued}
end
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  return {'wait', '0', 'behind', enqueued}
end

local paid = ARGV[12] ~= '' and now - tonumber(ARGV[12]) <= tonumber(ARGV[15])
if not paid then
  local reserve = tonumber(ARGV[10])
  local a_rate = tonumber(acct[2] or '') or tonumber(ARGV[5])
  local a_burst = tonumber(acct[3] or '') or tonumber(ARGV[6])
  local g_rate, g_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
  local a_tat = gcra_tat(KEYS[2], now)
  local g_tat = gcra_tat(KEYS[3], now)
  local a_wait = gcra_wait(a_tat, now, a_rate, a_burst, reserve)
  local g_wait = gcra_wait(g_tat, now, g_rate, g_burst, reserve)
  -- the gateway's own bucket (its API limit), between the account's and the fleet's; a
  -- rate of 0 means it can never bind (no tighter than the fleet's) and is skipped
  local gw_rate, gw_burst = tonumber(ARGV[17]), tonumber(ARGV[18])
  local gw_tat, gw_wait = 0, 0
  if gw_rate > 0 then
    gw_tat = gcra_tat(KEYS[8], now)
    gw_wait = gcra_wait(gw_tat, now, gw_rate, gw_burst, reserve)
  end
  if a_wait > 0 or g_wait > 0 or gw_wait > 0 then
    if a_wait >= g_wait and a_wait >= gw_wait then
      return {'wait', tostring(math.ceil(a_wait)), 'account', enqueued}
    end
    if gw_wait > g_wait then  -- a tie says "global": one gateway is the fleet's case
      return {'wait', tostring(math.ceil(gw_wait)), 'gateway', enqueued}
    end
    return {'wait', tostring(math.ceil(g_wait)), 'global', enqueued}
  end
  gcra_take(KEYS[2], a_tat, now, a_rate)
  if gw_rate > 0 then
    gcra_take(KEYS[8], gw_tat, now, gw_rate)
  end
  gcra_take(KEYS[3], g_tat, now, g_rate)
end

redis.call('HSET', KEYS[4], 'owner', ARGV[1], 'status', 'inflight', 'at', tostring(now),
  'hold_until', tostring(now + tonumber(ARGV[13])))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[2]))
return {'admitted', enqueued}
