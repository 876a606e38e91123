-- Move members of a fleet-wide zset of the previous layout to their shards' zsets
-- (wxtasks migrate), each with its score; a member already moved (a re-run) is skipped.
-- KEYS[1] = the old zset      KEYS[1 + i] = member i's new zset
-- ARGV[i] = member i
-- returns how many members moved
local moved = 0
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    redis.call('ZADD', KEYS[1 + i], score, ARGV[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
