-- A shard's lease: which dispatcher may dispatch from it, fenced. A new lease takes the
-- next fencing number, so the token of a holder whose lease ran out (it was paused, or cut
-- off) never matches again and dispatch.lua refuses it.
-- KEYS[1] = the lease (wx:{s}:lease: "<dispatcher id> <fence>")
-- KEYS[2] = the fencing counter (wx:{s}:fence)
-- ARGV[1] = acquire | renew | release   ARGV[2] = dispatcher id   ARGV[3] = lease, ms
-- ARGV[4] = the token held ("<id> <fence>"; renew and release)
-- returns the token now held ("" when not held)
local mode = ARGV[1]
if mode == 'acquire' then
  local held = redis.call('GET', KEYS[1])
  if held then
    if string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
      redis.call('PEXPIRE', KEYS[1], ARGV[3])
      return held
    end
    return ''
  end
  local token = ARGV[2] .. ' ' .. redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return token
end
if redis.call('GET', KEYS[1]) ~= ARGV[4] then
  return ''
end
if mode == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return ARGV[4]
end
redis.call('DEL', KEYS[1])
return ''
