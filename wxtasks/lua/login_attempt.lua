-- A console login attempt: allowed while fewer than `limit` attempts failed within the
-- window for the user name and for the client address; an allowed attempt is recorded as
-- failed in the same step (the caller removes it when the password was right), so
-- concurrent guesses cannot slip past the limit together.
-- KEYS[1] = the user name's failures   (wx:console:fails:user:<digest>), zset attempt -> ms
-- KEYS[2] = the client address's       (wx:console:fails:ip:<address>), same shape
-- ARGV[1] = now, ms
-- ARGV[2] = window, ms
-- ARGV[3] = limit (failures within the window that lock logins out)
-- ARGV[4] = this attempt's id
-- returns 0 (go ahead), or the ms until an attempt is allowed again
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local attempt = ARGV[4]

local wait = 0
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= limit then
    -- allowed again once all but limit - 1 of these have aged out of the window
    local oldest = redis.call('ZRANGE', KEYS[i], n - limit, n - limit, 'WITHSCORES')
    local left = tonumber(oldest[2]) + window - now
    if left > wait then
      wait = left
    end
  end
end
if wait > 0 then
  return wait
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, attempt)
  redis.call('PEXPIRE', KEYS[i], window)
end
return 0
