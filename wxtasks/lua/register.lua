-- Register an account, or update the options of one that exists. Atomic.
-- KEYS[1] = account hash              (wx:{s}:acct:<appId>)
-- KEYS[2] = heartbeat schedule        (wx:schedule:heartbeat)
-- KEYS[3] = registry set              (wx:accounts)
-- ARGV[1] = appId
-- ARGV[2] = first heartbeat due time, unix seconds (spread by the caller)
-- ARGV[3] = now, unix seconds as text
-- ARGV[4], ARGV[5], ... = option field, value pairs (rate, burst, note, tags)
-- returns 1 when the account is new, 0 when it existed (its options updated)
local options = {}
for i = 4, #ARGV do
  options[#options + 1] = ARGV[i]
end
redis.call('SADD', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if #options > 0 then
    redis.call('HSET', KEYS[1], unpack(options))
  end
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'IDLE', 'version', '1', 'retry_count', '0',
  'created_at', ARGV[3], 'state_since', ARGV[3], unpack(options))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
return 1
