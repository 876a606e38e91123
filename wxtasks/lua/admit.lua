-- Admit one send: account ONLINE, not a duplicate, a token in the global AND the
-- account's bucket; then take both tokens and claim the dedup key. All or nothing.
-- When only the account's bucket is short, the message books the account's next slot
-- instead ("scheduled"): it keeps its place in the account's line and frees the worker
-- until then; at its slot it needs only the global token.
-- KEYS[1] = account hash              (wx:acct:{appId})
-- KEYS[2] = account bucket            (wx:bucket:{appId})
-- KEYS[3] = global bucket             (wx:bucket:global)
-- KEYS[4] = send claim                (wx:claim:{appId}:<digest>)
-- ARGV[1] = owner: the task id
-- ARGV[2] = claim TTL, seconds
-- ARGV[3] = global rate, per second     ARGV[4] = global burst
-- ARGV[5] = default account rate        ARGV[6] = default account burst
-- ARGV[7] = now in milliseconds, or "" for Redis TIME (one clock for every host)
-- ARGV[8] = the longest wait worth booking, ms (the message's deadline), or "" for any
-- returns {"admitted"}
--       | {"unknown_account"}
--       | {"duplicate", owner, status, msgId, newMsgId, createTime}  claim held by another task
--       | {"redelivered", status, msgId, newMsgId, createTime}       this task's send may have left
--       | {"not_online", state}                                      (a booked slot is given up)
--       | {"scheduled", milliseconds}   account slot booked: come back then, claim held
--       | {"wait", milliseconds}        no global token yet, or the account's slot lies past
--                                       the message's deadline: nothing taken
-- Buckets are GCRA: each holds its theoretical arrival time (ms). A send is allowed when
-- tat + interval - burst * interval <= now; in any window T at most burst + rate * T pass.
local acct = redis.call('HMGET', KEYS[1], 'state', 'rate', 'burst')
if not acct[1] then
  return {'unknown_account'}
end

local claim = redis.call('HMGET', KEYS[4], 'owner', 'status', 'msgId', 'newMsgId', 'createTime')
local booked = false
if claim[1] then
  if claim[1] ~= ARGV[1] then
    return {'duplicate', claim[1], claim[2] or '', claim[3] or '', claim[4] or '', claim[5] or ''}
  end
  if claim[2] ~= 'scheduled' then
    return {'redelivered', claim[2] or '', claim[3] or '', claim[4] or '', claim[5] or ''}
  end
  booked = true
end

if acct[1] ~= 'ONLINE' then
  if booked then
    redis.call('DEL', KEYS[4])
  end
  return {'not_online', acct[1]}
end

local now
if ARGV[7] ~= '' then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function probe(key, rate, burst)
  local interval = 1000 / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  return new_tat, allow_at - now
end

local ttl = tonumber(ARGV[2])
local g_tat, g_wait = probe(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))

if not booked then
  local a_rate = tonumber(acct[2] or '') or tonumber(ARGV[5])
  local a_burst = tonumber(acct[3] or '') or tonumber(ARGV[6])
  local a_tat, a_wait = probe(KEYS[2], a_rate, a_burst)
  if ARGV[8] ~= '' and a_wait > tonumber(ARGV[8]) then
    return {'wait', tostring(math.ceil(a_wait))}  -- a slot it could never use: book none
  end
  if a_wait > 0 or g_wait <= 0 then
    -- the account's token is taken now, whether for now or for a booked slot
    redis.call('SET', KEYS[2], tostring(a_tat), 'PX', math.ceil(a_tat - now) + 1000)
  end
  if a_wait > 0 then
    redis.call('HSET', KEYS[4], 'owner', ARGV[1], 'status', 'scheduled', 'at', tostring(now))
    redis.call('EXPIRE', KEYS[4], ttl + math.ceil(a_wait / 1000))
    return {'scheduled', tostring(math.ceil(a_wait))}
  end
end

if g_wait > 0 then
  return {'wait', tostring(math.ceil(g_wait))}
end
redis.call('SET', KEYS[3], tostring(g_tat), 'PX', math.ceil(g_tat - now) + 1000)
redis.call('HSET', KEYS[4], 'owner', ARGV[1], 'status', 'inflight', 'at', tostring(now))
redis.call('EXPIRE', KEYS[4], ttl)
return {'admitted'}
