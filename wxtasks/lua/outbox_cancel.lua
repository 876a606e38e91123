-- Take one waiting message out of the outbox (an operator cancelled it, or its campaign).
-- KEYS[1] = waiting messages          (wx:{s}:outbox:messages)
-- KEYS[2] = its lane                  (wx:{s}:outbox:<appId>:<lane>)
-- KEYS[3] = held messages             (wx:{s}:outbox:held)
-- KEYS[4] = waiting messages' campaigns (wx:{s}:outbox:campaign_of)
-- KEYS[5] = waiting messages to groups (wx:{s}:outbox:to_group)
-- ARGV[1] = task id
-- returns its body, or false when it was not waiting (already dispatched, or done)
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 and redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return false
end
local body = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
return body or false
