-- Record a heartbeat batch in one call: each successful liveness probe (unless its account
-- left ONLINE meanwhile), and the batch's lateness samples.
-- KEYS[1] = heartbeat lateness samples (wx:stats:heartbeat_lateness)  list, newest first
-- KEYS[2..] = the hashes of the accounts whose probe succeeded (wx:{s}:acct:<appId>)
-- ARGV[1] = now, unix seconds as text
-- ARGV[2] = how many lateness samples to keep
-- ARGV[3..] = this batch's lateness samples (seconds as text)
-- returns how many probes were recorded
local recorded = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'ONLINE' then
    redis.call('HSET', KEYS[i], 'last_heartbeat_at', ARGV[1])
    recorded = recorded + 1
  end
end
if #ARGV > 2 then
  redis.call('LPUSH', KEYS[1], unpack(ARGV, 3))
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
end
return recorded
