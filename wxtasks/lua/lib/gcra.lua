-- gcra: the token-bucket arithmetic every script shares; scripts.py puts this file in
-- front of each script whose header says "-- uses: gcra". One copy of the arithmetic for
-- admission, the dispatcher and the bucket levels that status and metrics show.
-- A bucket holds its theoretical arrival time (tat, ms). With interval = 1000 / rate, a
-- send is allowed at `now` when tat' - burst' * interval <= now, where tat' = max(tat, now)
-- + interval and burst' = burst - reserve: in any window T at most burst + rate * T pass.
-- `reserve` tokens are left for others (bulk sends leave one, so a reply always finds it).
local function gcra_now(explicit)
  if explicit ~= nil and explicit ~= '' then
    return tonumber(explicit)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function gcra_tat(key, now)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    return now
  end
  return tat
end

-- ms until one token is allowed (<= 0: allowed now)
local function gcra_wait(tat, now, rate, burst, reserve)
  local interval = 1000 / rate
  local usable = burst - math.min(reserve, burst - 1)
  return tat + interval - usable * interval - now
end

-- take one token: returns the new tat, written with an expiry for when the bucket is full
local function gcra_take(key, tat, now, rate)
  local new_tat = tat + 1000 / rate
  redis.call('SET', key, tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  return new_tat
end

-- tokens the bucket could hand out now (0 .. burst)
local function gcra_tokens(tat, now, rate, burst)
  local left = burst - (tat - now) * rate / 1000
  if left < 0 then
    return 0
  end
  return left
end
