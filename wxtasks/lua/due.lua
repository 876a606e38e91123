-- What a dispatcher has to do now in one shard, in one call: an idle tick costs one round
-- trip for all of its shards (the calls are pipelined).
-- KEYS[1] = the shard's dispatched messages (wx:{s}:outbox:inflight)  zset: id -> lease end
-- KEYS[2..] = the shard's ready set of each lane (wx:{s}:outbox:ready:<lane>)  zset: appId
--             -> due, ms
-- ARGV[1] = now in ms, or "" for Redis TIME (the clock of every bucket)
-- returns {now, leases run out (0 or more), then for each lane: accounts due now, and when
-- the most overdue of them was due (ms; "" when none)}
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local out = {tostring(now), redis.call('ZCOUNT', KEYS[1], '-inf', now)}
for i = 2, #KEYS do
  local n = redis.call('ZCOUNT', KEYS[i], '-inf', now)
  out[#out + 1] = n
  local head = ''
  if n > 0 then
    head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')[2]
  end
  out[#out + 1] = head
end
return out
