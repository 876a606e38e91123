-- Take the entries of a timer set that are due (each is taken by exactly one caller).
-- KEYS[1] = timer sorted set          (wx:schedule:later), member JSON, score due time
-- ARGV[1] = now, unix seconds
-- ARGV[2] = most entries to take
-- returns the members taken
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
