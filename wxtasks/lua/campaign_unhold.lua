-- Put a held message (its campaign was paused) back in its lane, in its old place.
-- KEYS[1] = held messages             (wx:{s}:outbox:held)  zset: task id -> order
-- KEYS[2] = its lane                  (wx:{s}:outbox:<appId>:<lane>)
-- KEYS[3] = the lane's ready set      (wx:{s}:outbox:ready:<lane>)
-- ARGV[1] = task id    ARGV[2] = appId    ARGV[3] = now, ms
-- returns 1 when it was held, else 0
local order = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not order then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], order, ARGV[1])
redis.call('ZADD', KEYS[3], 'LT', tonumber(ARGV[3]), ARGV[2])
return 1
