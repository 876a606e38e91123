-- Add a chunk of targets to a campaign; a target index already there is kept as it was,
-- so streaming the same targets again (a retried create) adds nothing twice.
-- KEYS[1] = the campaign              (wx:campaign:{id})           hash
-- KEYS[2] = its targets               (wx:campaign:{id}:targets)   hash: index -> appId TAB wxid
-- KEYS[3] = its counts                (wx:campaign:{id}:counts)    hash
-- ARGV[1] = the first index of the chunk
-- ARGV[2..] = targets, each "appId\twxid"
-- returns the indexes that were new
local first = tonumber(ARGV[1])
local added = {}
for i = 2, #ARGV do
  local index = first + i - 2
  if redis.call('HSETNX', KEYS[2], index, ARGV[i]) == 1 then
    local app = string.match(ARGV[i], '^([^\t]*)')
    redis.call('HINCRBY', KEYS[3], app .. '|total', 1)
    redis.call('HINCRBY', KEYS[1], 'total', 1)
    added[#added + 1] = index
  end
end
return added
