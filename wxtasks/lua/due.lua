-- What the dispatcher has to do now, in one call: an idle tick costs one round trip.
-- KEYS[1] = dispatched messages (wx:outbox:inflight)  zset: task id -> lease end, ms
-- KEYS[2..] = each lane's ready set (wx:outbox:ready:<lane>)  zset: appId -> due, ms
-- ARGV[1] = now in ms, or "" for Redis TIME (the clock of every bucket)
-- returns {now, leases run out (0 or more), then for each lane: accounts due now (0 or more)}
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local out = {tostring(now)}
for i = 1, #KEYS do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[i], '-inf', now)
end
return out
