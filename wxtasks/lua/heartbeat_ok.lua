-- Record a successful liveness probe, unless the account left ONLINE meanwhile.
-- KEYS[1] = account hash              (wx:acct:{appId})
-- ARGV[1] = now, unix seconds as text
-- returns 1 when recorded, 0 otherwise
if redis.call('HGET', KEYS[1], 'state') ~= 'ONLINE' then
  return 0
end
redis.call('HSET', KEYS[1], 'last_heartbeat_at', ARGV[1])
return 1
