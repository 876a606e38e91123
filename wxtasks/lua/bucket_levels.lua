-- Read bucket levels the way admission computes them (for status and metrics).
-- uses: gcra
-- KEYS[i] = a bucket (wx:bucket:global or wx:{s}:bucket:<appId>)
-- ARGV[1] = now ms, or "" for Redis TIME
-- ARGV[2i], ARGV[2i + 1] = bucket i's rate per second and burst
-- returns {tokens_1, next_token_ms_1, tokens_2, ...} as strings: tokens it could hand out
-- now, and ms until the next one (0 when one is there)
local now = gcra_now(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = gcra_tat(KEYS[i], now)
  out[#out + 1] = tostring(gcra_tokens(tat, now, rate, burst))
  out[#out + 1] = tostring(math.max(0, gcra_wait(tat, now, rate, burst, 0)))
end
return out
