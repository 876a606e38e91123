-- Bring one shard's copies of the fleet-wide sets a dispatch call reads up to date (all
-- three at once, so a dispatch call never sees half of a change).
-- KEYS[1] = its copy of the stopped campaigns  (wx:{s}:campaigns:stopped)  hash
-- KEYS[2] = its copy of the gateways down      (wx:{s}:gateways:down)      set
-- KEYS[3] = its copy of campaigns' own spacing (wx:{s}:campaigns:jitter)   hash
-- KEYS[4] = what it holds: "<snapshot time> <digest>"  (wx:{s}:mirrors)
-- ARGV[1] = "<snapshot time> <digest>" of the fleet-wide sets, read at that Redis time
-- ARGV[2] = n, then n pairs (campaign, paused | cancelled); then m, m gateways; then j,
--           j pairs (campaign, "MIN-MAX")
-- returns 1 when the copies changed, 0 when they were up to date (or a later snapshot
-- is there already: two refreshes at once never leave the older one in place)
local held = redis.call('GET', KEYS[4])
if held then
  local held_at, held_digest = string.match(held, '^(%S+) (%S+)$')
  local at, digest = string.match(ARGV[1], '^(%S+) (%S+)$')
  if held_digest == digest or tonumber(held_at) >= tonumber(at) then
    return 0
  end
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
