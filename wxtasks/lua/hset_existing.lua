-- Write fields on a hash only if it exists (never resurrect a removed account).
-- KEYS[1] = the hash
-- ARGV[1], ARGV[2], ... = field, value pairs
-- returns 1 when written, 0 when the hash does not exist
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
