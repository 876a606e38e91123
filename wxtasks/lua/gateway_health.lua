-- Record how a call to a gateway went, and say when the gateway goes down or comes back.
-- Atomic, so however many workers see the same outage, exactly one gets "down" (and
-- raises the one alert) and exactly one gets "up".
-- KEYS[1] = the gateway's health      (wx:gateway:<name>:health)  hash
-- KEYS[2] = gateways marked down      (wx:gateways:down)  set
-- ARGV[1] = the gateway's name
-- ARGV[2] = "fail": it did not answer (refused, 503, connect timeout) | "ok": it answered
-- ARGV[3] = now, unix seconds
-- ARGV[4] = unavailable answers in a row that mark it down
-- ARGV[5] = ... spread over at least this many seconds
-- ARGV[6] = what failed (shown to operators)
-- ARGV[7] = how many calls failed ("fail": a heartbeat batch reports its failures at once)
-- returns "down" when this call marked it down, "up" when this call marked it up, else ""
local name, now = ARGV[1], tonumber(ARGV[3])
if ARGV[2] == 'ok' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return ''
  end
  local down = redis.call('HGET', KEYS[1], 'down_since')
  redis.call('DEL', KEYS[1])
  if down then
    redis.call('SREM', KEYS[2], name)
    return 'up'
  end
  return ''
end

local over = tonumber(ARGV[5])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_failure_at') or '')
local stale = last and now - last > math.max(60, 3 * over)
if stale and redis.call('HEXISTS', KEYS[1], 'down_since') == 0 then
  -- a failure long after the previous one starts a new count (nothing said "ok" between)
  redis.call('DEL', KEYS[1])
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', math.max(1, tonumber(ARGV[7])))
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or '')
if not first then
  first = now
  redis.call('HSET', KEYS[1], 'first_failure_at', ARGV[3])
end
redis.call('HSET', KEYS[1], 'last_failure_at', ARGV[3], 'last_error', ARGV[6])
if redis.call('HEXISTS', KEYS[1], 'down_since') == 1 then
  return ''
end
if failures >= tonumber(ARGV[4]) and now - first >= over then
  redis.call('HSET', KEYS[1], 'down_since', ARGV[3])
  redis.call('SADD', KEYS[2], name)
  return 'down'
end
return ''
