-- Take the entries of a due-time schedule that are due, and move each to its next slot.
-- KEYS[1] = schedule sorted set       (wx:schedule:heartbeat), member appId, score due time
-- ARGV[1] = now, unix seconds
-- ARGV[2] = interval, seconds
-- ARGV[3] = most entries to take
-- returns a flat list {appId, due, appId, due, ...}; each taken entry's next due time is
-- its old one plus whole intervals, so the spread of phases survives a stopped beat
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[3]))
for i = 1, #due, 2 do
  local at = tonumber(due[i + 1])
  local nxt = at + interval
  if nxt <= now then
    nxt = at + interval * (math.floor((now - at) / interval) + 1)
  end
  redis.call('ZADD', KEYS[1], nxt, due[i])
end
return due
