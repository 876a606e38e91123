-- Compare-and-set one account state transition, and publish it.
-- KEYS[1] = account hash              (wx:{s}:acct:<appId>)
-- KEYS[2] = events stream             (wx:events)
-- ARGV[1] = expected version
-- ARGV[2] = new state
-- ARGV[3] = event name
-- ARGV[4] = reason (free text)
-- ARGV[5] = now, unix seconds as text
-- ARGV[6] = events stream cap (approximate MAXLEN)
-- ARGV[7] = appId (for the event entry)
-- ARGV[8], ARGV[9], ... = field, value pairs written with the transition
-- returns the new version; 0 when the account does not exist; -1 when the version moved on
local cur = redis.call('HMGET', KEYS[1], 'version', 'state')
if not cur[1] then
  return 0
end
if tonumber(cur[1]) ~= tonumber(ARGV[1]) then
  return -1
end
local version = tonumber(cur[1]) + 1
local fields = {'state', ARGV[2], 'version', version, 'updated_at', ARGV[5]}
for i = 8, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
local retry = redis.call('HGET', KEYS[1], 'retry_count') or '0'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[6]), '*',
  'kind', 'transition', 'app_id', ARGV[7], 'prev', cur[2], 'curr', ARGV[2],
  'event', ARGV[3], 'reason', ARGV[4], 'at', ARGV[5], 'retry_count', retry,
  'version', tostring(version))
return version
