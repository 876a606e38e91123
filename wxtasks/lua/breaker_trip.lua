-- Trip an account's bulk circuit breaker, once: its bulk lane cools off until then.
-- KEYS[1] = account hash              (wx:{s}:acct:<appId>)
-- ARGV[1] = now (unix seconds)        ARGV[2] = cool off until (unix seconds)
-- ARGV[3] = why
-- returns 1 when this call tripped it, 0 when it was already cooling off (or no account)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local until_ = tonumber(redis.call('HGET', KEYS[1], 'bulk_cooloff_until') or '0')
if until_ > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'bulk_cooloff_until', ARGV[2], 'bulk_cooloff_why', ARGV[3],
  'bulk_errors', '0')
return 1
