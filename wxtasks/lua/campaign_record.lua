-- Record how one target of a campaign ended, once: the first outcome stands.
-- KEYS[1] = the campaign              (wx:campaign:{id})
-- KEYS[2] = its counts                (wx:campaign:{id}:counts)
-- KEYS[3] = its outcomes              (wx:campaign:{id}:results)   hash: index -> JSON
-- ARGV[1] = the target's index   ARGV[2] = appId   ARGV[3] = status   ARGV[4] = outcome JSON
-- ARGV[5] = now (unix seconds)
-- returns {ended, total} after this record, or {} when the target had ended already
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[4]) == 0 then
  return {}
end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], ARGV[2] .. '|' .. ARGV[3], 1)
if ARGV[3] == 'sent' then
  redis.call('HSET', KEYS[1], 'last_sent_at', ARGV[5])
end
local ended = redis.call('HINCRBY', KEYS[1], 'ended', 1)
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
return {ended, total}
