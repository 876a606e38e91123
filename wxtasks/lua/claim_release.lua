-- Release a send claim (the message was not sent), if this task owns it.
-- KEYS[1] = send claim                (wx:{s}:claim:<appId>:<digest>)
-- ARGV[1] = owner: the task id
-- returns 1 when released, 0 otherwise
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1])
