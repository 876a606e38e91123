-- Park a message in its account's lane of the outbox, to be dispatched again when the
-- buckets allow (or, for a retry, not before its backoff ends).
-- KEYS[1] = waiting messages          (wx:{s}:outbox:messages)  hash: task id -> body (JSON)
-- KEYS[2] = the lane                  (wx:{s}:outbox:<appId>:<lane>)  zset: task id -> order
-- KEYS[3] = the lane's ready set      (wx:{s}:outbox:ready:<lane>)  zset: appId -> look at, ms
-- KEYS[4] = dispatched messages       (wx:{s}:outbox:inflight)  zset: task id -> lease end, ms
-- KEYS[5] = waiting messages' campaigns (wx:{s}:outbox:campaign_of)  hash: task id -> campaign
-- KEYS[6] = waiting messages to groups (wx:{s}:outbox:to_group)  set of task ids
-- ARGV[1] = task id    ARGV[2] = body (JSON)
-- ARGV[3] = order in the lane: when it was first enqueued, ms (FIFO)
-- ARGV[4] = appId      ARGV[5] = in how many ms the dispatcher should look at the account
--           (from Redis TIME: the dispatcher's clock, whatever the worker's)
-- ARGV[6] = "hold": the lane waits until then (a retry's backoff, for every message of
--           the account) | "soon": no later than then
-- ARGV[7] = "" or a lease end: park only if the message is still dispatched with a lease
--           that ended by then (taking back what a dead holder leased)
-- ARGV[8] = the campaign the message is a target of, or ""
-- ARGV[9] = "1" when its recipient is a group (its bulk spacing is a group's)
-- returns the lane's length, or -1 when ARGV[7] did not hold
if ARGV[7] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[4], ARGV[1])
  if not lease or tonumber(lease) > tonumber(ARGV[7]) then
    return -1
  end
end
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[8])
end
if ARGV[9] == '1' then
  redis.call('SADD', KEYS[6], ARGV[1])
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[6] == 'hold' then
  redis.call('ZADD', KEYS[3], 'GT', due, ARGV[4])
else
  redis.call('ZADD', KEYS[3], 'LT', due, ARGV[4])
end
return redis.call('ZCARD', KEYS[2])
