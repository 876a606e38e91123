-- Bring one shard's copies of the fleet-wide sets a dispatch call reads up to date (all
-- three at once, so a dispatch call never sees half of a change).
-- KEYS[1] = its copy of the stopped campaigns  (wx:{s}:campaigns:stopped)  hash
-- KEYS[2] = its copy of the gateways down      (wx:{s}:gateways:down)      set
-- KEYS[3] = its copy of campaigns' own spacing (wx:{s}:campaigns:jitter)   hash
-- KEYS[4] = the digest of what it holds        (wx:{s}:mirrors)
-- ARGV[1] = the digest of the fleet-wide sets now
-- ARGV[2] = n, then n pairs (campaign, paused | cancelled); then m, m gateways; then j,
--           j pairs (campaign, "MIN-MAX")
-- returns 1 when the copies changed, 0 when they were up to date
if redis.call('GET', KEYS[4]) == ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local i = 2
for k = 1, 3 do
  local n = tonumber(ARGV[i])
  i = i + 1
  if k == 2 then
    for x = i, i + n - 1, 500 do
      redis.call('SADD', KEYS[2], unpack(ARGV, x, math.min(x + 499, i + n - 1)))
    end
    i = i + n
  else
    for x = i, i + 2 * n - 1, 500 do
      redis.call('HSET', KEYS[k], unpack(ARGV, x, math.min(x + 499, i + 2 * n - 1)))
    end
    i = i + 2 * n
  end
end
redis.call('SET', KEYS[4], ARGV[1])
return 1
