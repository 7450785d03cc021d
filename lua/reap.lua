-- reap: return deliveries whose lease expired, and promote due scheduled tasks. Bounded per call; safe to run
-- from any number of processes at once (each expired delivery is removed from KEYS[3] exactly once).
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = most leases to reap; ARGV[2] = max deliveries (a task whose lease expired this many deliveries in a
--           row is dead-lettered; KEYS[5] counts the expired ones); ARGV[3] = most scheduled tasks to promote; ARGV[4] = reason prefix for dead letters.
-- Returns {requeued, dead, promoted}.
local limit, maxd, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was_empty = redis.call('LLEN', KEYS[2]) == 0
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, promote)
if #due > 0 then
  redis.call('ZREM', KEYS[6], unpack(due))
  redis.call('RPUSH', KEYS[2], unpack(due))
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
local requeued, dead = 0, 0
for i = #ids, 1, -1 do
  local id = ids[i]
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  local d = tonumber(redis.call('HGET', KEYS[5], id) or '0') + 1
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('HDEL', KEYS[5], id)
  elseif d >= maxd then
    redis.call('HDEL', KEYS[5], id)
    redis.call('ZADD', KEYS[7], now, id)
    redis.call('HSET', KEYS[8], id, ARGV[4] .. ' (' .. d .. ' deliveries, each lease expired)')
    dead = dead + 1
  else
    redis.call('HSET', KEYS[5], id, d)
    redis.call('LPUSH', KEYS[2], id)
    requeued = requeued + 1
  end
end
if was_empty and (requeued > 0 or #due > 0) then
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
return {requeued, dead, #due}
