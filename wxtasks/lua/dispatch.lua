-- Dispatch from one lane of the given accounts (the most overdue first) what the buckets
-- allow now. Each message moves from its lane to the dispatched set with a lease and is
-- returned for publishing onto the send queue. Its tokens are taken here, so the send
-- task admits it at once; the bulk lane leaves `reserve` tokens for replies.
-- uses: gcra
-- KEYS[1] = global bucket       KEYS[2] = this lane's ready set (wx:outbox:ready:<lane>)
-- KEYS[3] = dispatched set      KEYS[4] = waiting messages (wx:outbox:messages)
-- KEYS[3 + 3i], KEYS[4 + 3i], KEYS[5 + 3i] (i = 1..n) = account i's hash, bucket, lane
-- ARGV[1] = now ms, or "" for Redis TIME    ARGV[2] = lease, ms
-- ARGV[3] = global rate   ARGV[4] = global burst
-- ARGV[5] = default account rate   ARGV[6] = default account burst
-- ARGV[7] = tokens to leave in each bucket  ARGV[8] = the lane's window, ms
-- ARGV[9] = most messages to dispatch       ARGV[10] = look again at a held account after, ms
-- ARGV[10 + i] = account i's appId
-- returns {now, id, body, paid, id, body, paid, ...}; paid is "1" when the tokens were taken
-- An account that is RECONNECTING or LOGGING_IN is held (only messages past their deadline
-- leave, for the worker to fail); one that is IDLE, ERROR or gone releases everything,
-- since the send task fails it with the reason.
local now = gcra_now(ARGV[1])
local lease, window = tonumber(ARGV[2]), tonumber(ARGV[8])
local g_rate, g_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local reserve, max_n, poll = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[10])
local g_tat = gcra_tat(KEYS[1], now)
local out = {tostring(now)}
local n = 0

local function pop(lane, paid)
  local head = redis.call('ZPOPMIN', lane)
  if #head == 0 then
    return false
  end
  local body = redis.call('HGET', KEYS[4], head[1])
  if body then
    redis.call('ZADD', KEYS[3], now + lease, head[1])
    out[#out + 1] = head[1]
    out[#out + 1] = body
    out[#out + 1] = paid
    n = n + 1
  end
  return true
end

for i = 1, #ARGV - 10 do
  if n >= max_n then
    break
  end
  local app = ARGV[10 + i]
  local hash, bucket, lane = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local acct = redis.call('HMGET', hash, 'state', 'rate', 'burst')
  local state = acct[1]
  local next_at = nil  -- nil: keep its place (it is overdue and goes first next time)
  if state == 'ONLINE' then
    local rate = tonumber(acct[2] or '') or tonumber(ARGV[5])
    local burst = tonumber(acct[3] or '') or tonumber(ARGV[6])
    local a_tat = gcra_tat(bucket, now)
    local served = 0
    while n < max_n do
      local a_wait = gcra_wait(a_tat, now, rate, burst, reserve)
      if a_wait > 0 then
        next_at = now + a_wait
        break
      end
      if gcra_wait(g_tat, now, g_rate, g_burst, reserve) > 0 then
        break
      end
      if redis.call('EXISTS', lane) == 0 then
        break
      end
      a_tat = gcra_take(bucket, a_tat, now, rate)
      g_tat = gcra_take(KEYS[1], g_tat, now, g_rate)
      pop(lane, '1')
      served = served + 1
    end
    if served > 0 and next_at == nil then
      next_at = now  -- served: behind the accounts still waiting for a global token
    end
  elseif state == 'RECONNECTING' or state == 'LOGGING_IN' then
    while n < max_n do
      local head = redis.call('ZRANGE', lane, 0, 0, 'WITHSCORES')
      if #head == 0 or tonumber(head[2]) + window >= now then
        break
      end
      pop(lane, '0')
    end
    next_at = now + poll
  else
    while n < max_n and pop(lane, '0') do
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
