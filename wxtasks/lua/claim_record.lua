-- Record the outcome of a send on its claim, if this task still owns it.
-- KEYS[1] = send claim                (wx:claim:{appId}:<digest>)
-- ARGV[1] = owner: the task id
-- ARGV[2] = status: sent | unknown
-- ARGV[3] = msgId    ARGV[4] = newMsgId    ARGV[5] = createTime
-- returns 1 when recorded, 0 when the claim is gone or owned by another task
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'msgId', ARGV[3], 'newMsgId', ARGV[4],
  'createTime', ARGV[5])
return 1
