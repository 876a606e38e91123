-- Borrow tokens from a shared bucket (the fleet's, or a gateway's) for one shard's quota:
-- up to ARGV[4] tokens, as many as the bucket has now (leaving ARGV[3] for others: the
-- bulk lane leaves one, so a reply always finds it). The bucket is the coordinator of the
-- shards' quotas; what it lends counts as sent, so the shards together never pass
-- burst + rate * T, and a borrowed token lapses unspent after one refill period.
-- uses: gcra
-- KEYS[1] = the shared bucket (wx:bucket:global, wx:bucket:gw:<name>)
-- ARGV[1] = rate /s   ARGV[2] = burst   ARGV[3] = tokens to leave   ARGV[4] = tokens wanted
-- ARGV[5] = now in ms, or "" for Redis TIME (the clock of every bucket)
-- returns {granted, now, ms until the bucket has a token again (<= 0: it has one now)}
local now = gcra_now(ARGV[5])
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local reserve, wanted = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = gcra_tat(KEYS[1], now)
local granted = 0
while granted < wanted and gcra_wait(tat, now, rate, burst, reserve) <= 0 do
  tat = tat + 1000 / rate
  granted = granted + 1
end
if granted > 0 then
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
return {granted, tostring(now), tostring(gcra_wait(tat, now, rate, burst, reserve))}
