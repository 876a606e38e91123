-- Admit one send: the account is ONLINE, the message is no duplicate and not past its
-- deadline, nothing older waits in its lane, and the global AND the account's bucket have
-- a token; then take both tokens and claim the dedup key. All or nothing.
-- uses: gcra
-- KEYS[1] = account hash              (wx:acct:{appId})
-- KEYS[2] = account bucket            (wx:bucket:{appId})
-- KEYS[3] = global bucket             (wx:bucket:global)
-- KEYS[4] = send claim                (wx:claim:{appId}:<digest>)
-- KEYS[5] = the message's lane        (wx:outbox:{appId}:<lane>)
-- KEYS[6] = first-seen mark           (wx:seen:{appId}:<task id>)
-- KEYS[7] = stopped campaigns         (wx:campaigns:stopped)  hash: id -> paused|cancelled
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
-- ARGV[12] = "1" when the dispatcher already took its tokens (dispatched just now)
-- ARGV[13] = how long an admitted send may take, ms (its claim's hold)
-- ARGV[14] = the message's campaign id, or ""
-- returns {"admitted", enqueued}
--       | {"unknown_account"}
--       | {"expired", enqueued}
--       | {"duplicate", owner, status, msgId, newMsgId, createTime}  another task's claim
--       | {"redelivered", status, msgId, newMsgId, createTime, hold_left_ms}  this task's
--       | {"not_online", state, enqueued}
--       | {"stopped", paused|cancelled, enqueued}   its campaign was paused or cancelled
--       | {"wait", ms, why, enqueued}  why: account | global | behind; nothing taken
local acct = redis.call('HMGET', KEYS[1], 'state', 'rate', 'burst')
if not acct[1] then
  return {'unknown_account'}
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
if ARGV[11] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  return {'wait', '0', 'behind', enqueued}
end

if ARGV[12] ~= '1' then
  local reserve = tonumber(ARGV[10])
  local a_rate = tonumber(acct[2] or '') or tonumber(ARGV[5])
  local a_burst = tonumber(acct[3] or '') or tonumber(ARGV[6])
  local g_rate, g_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
  local a_tat = gcra_tat(KEYS[2], now)
  local g_tat = gcra_tat(KEYS[3], now)
  local a_wait = gcra_wait(a_tat, now, a_rate, a_burst, reserve)
  local g_wait = gcra_wait(g_tat, now, g_rate, g_burst, reserve)
  if a_wait > 0 or g_wait > 0 then
    if a_wait >= g_wait then
      return {'wait', tostring(math.ceil(a_wait)), 'account', enqueued}
    end
    return {'wait', tostring(math.ceil(g_wait)), 'global', enqueued}
  end
  gcra_take(KEYS[2], a_tat, now, a_rate)
  gcra_take(KEYS[3], g_tat, now, g_rate)
end

redis.call('HSET', KEYS[4], 'owner', ARGV[1], 'status', 'inflight', 'at', tostring(now),
  'hold_until', tostring(now + tonumber(ARGV[13])))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[2]))
return {'admitted', enqueued}
