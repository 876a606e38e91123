-- Take one waiting message out of its lane (an operator cancelled it).
-- KEYS[1] = waiting messages          (wx:outbox:messages)
-- KEYS[2] = its lane                  (wx:outbox:{appId}:<lane>)
-- ARGV[1] = task id
-- returns its body, or false when it was not waiting there (already dispatched or done)
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return false
end
local body = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return body
