-- The live dispatchers, which split the shards among themselves: a dispatcher says it is
-- alive (join) or leaving (leave); one not heard from within its TTL is out of the split.
-- KEYS[1] = live dispatchers (wx:dispatchers)  zset: id -> alive until, ms (Redis TIME)
-- ARGV[1] = join | leave   ARGV[2] = dispatcher id   ARGV[3] = TTL, ms
-- returns {now (ms), the live dispatchers' ids ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'join' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(live, 1, tostring(now))
return live
