-- Claim a received message (dedupe on appId + NewMsgId) and record it, once.
-- KEYS[1] = seen key                  (wx:{s}:inbound:seen:<appId>:<newMsgId>)
-- KEYS[2] = received messages list    (wx:inbound)
-- ARGV[1] = owner: the task id handling it
-- ARGV[2] = seen TTL, seconds
-- ARGV[3] = the message as JSON (recorded when new)
-- ARGV[4] = how many received messages to keep
-- returns "new" (claimed and recorded), "redelivered" (this task claimed it before),
-- or "duplicate" (another task handled it)
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[1] then
    return 'redelivered'
  end
  return 'duplicate'
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return 'new'
