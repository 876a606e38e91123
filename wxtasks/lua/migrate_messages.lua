-- Move outbox messages of the previous layout (fleet-wide structures) to their shards'
-- (wxtasks migrate): each message's body, lease, held place, campaign and group mark move
-- together and leave the old structures in the same step, so a re-run after a kill
-- finds each message either wholly moved or not at all. A message parked by an older
-- release without its campaign_of / to_group entry gets them from its body (ARGV).
-- KEYS[1] = waiting messages   (wx:outbox:messages)     KEYS[2] = dispatched (wx:outbox:inflight)
-- KEYS[3] = held messages      (wx:outbox:held)         KEYS[4] = campaigns (wx:outbox:campaign_of)
-- KEYS[5] = to groups          (wx:outbox:to_group)
-- KEYS[5i + 1 .. 5i + 5] = the same five for message i's shard (wx:{s}:outbox:...)
-- ARGV[3i - 2] = message i's task id    ARGV[3i - 1] = its campaign from its body, or ""
-- ARGV[3i] = "1" when its body's recipient is a group
-- returns {moved, dispatched, held, campaigns filled in, group marks filled in}
local out = {0, 0, 0, 0, 0}
for i = 1, #ARGV / 3 do
  local id, campaign, group = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local k = 5 * i
  local body = redis.call('HGET', KEYS[1], id)
  if body then
    redis.call('HSET', KEYS[k + 1], id, body)
    redis.call('HDEL', KEYS[1], id)
    out[1] = out[1] + 1
    for j = 2, 3 do
      local score = redis.call('ZSCORE', KEYS[j], id)
      if score then
        redis.call('ZADD', KEYS[k + j], score, id)
        redis.call('ZREM', KEYS[j], id)
        out[j] = out[j] + 1
      end
    end
    local known = redis.call('HGET', KEYS[4], id)
    if known then
      redis.call('HSET', KEYS[k + 4], id, known)
      redis.call('HDEL', KEYS[4], id)
    elseif campaign ~= '' then
      redis.call('HSET', KEYS[k + 4], id, campaign)
      out[4] = out[4] + 1
    end
    if redis.call('SREM', KEYS[5], id) == 1 then
      redis.call('SADD', KEYS[k + 5], id)
    elseif group == '1' then
      redis.call('SADD', KEYS[k + 5], id)
      out[5] = out[5] + 1
    end
  end
end
return out
