-- reap: return deliveries whose lease expired, and promote due scheduled tasks. Bounded per call; safe to run
-- from any number of processes at once (each expired delivery is removed from active exactly once).
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, active, lease, deliveries, scheduled,
-- dead, errors and wake, then the group run keys that the claims name (hash, done list).
-- ARGV[1] = most leases to reap; ARGV[2] = max deliveries (a task whose lease expired this many deliveries in a
--           row is dead-lettered; deliveries counts the expired ones); ARGV[3] = most scheduled tasks to promote;
--           ARGV[4] = reason prefix for dead letters; ARGV[5..] = claims: pairs id, KEYS index of its group run
--           hash (0 = none).
-- A task due for the dead letters whose envelope may name a group run ('"group_id":"…@') is held: left as it is
-- and returned with its envelope, since its group's keys were not passed. The caller calls again with it as a
-- claim and its group's keys: if its lease is still expired, that call dead-letters it and completes its group
-- as failed (group_done, group.lua), in one script.
-- Returns {requeued, dead, promoted, held id1, envelope1, ...}.
local tasks, pending, active, lease, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local scheduled, dead, errors, wake = KEYS[6], KEYS[7], KEYS[8], KEYS[11]
local limit, maxd, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local was_empty = redis.call('LLEN', pending) == 0
local requeued, buried = 0, 0
local function bury(id, d)
  redis.call('ZREM', active, id)
  redis.call('HDEL', lease, id)
  redis.call('HDEL', deliveries, id)
  redis.call('ZADD', dead, now, id)
  local why = ARGV[4] .. ' (' .. d .. ' deliveries, each lease expired)'
  redis.call('HSET', errors, id, why)
  buried = buried + 1
  return why
end
for i = 5, #ARGV, 2 do
  local id, g = ARGV[i], tonumber(ARGV[i + 1])
  local score = tonumber(redis.call('ZSCORE', active, id))
  local d = tonumber(redis.call('HGET', deliveries, id) or '0') + 1
  if score and score <= now and d >= maxd and redis.call('HEXISTS', tasks, id) == 1 then
    local why = bury(id, d)
    if g > 0 then group_done(KEYS[g], KEYS[g + 1], id, '0' .. why) end
  end
end
local promoted = promote_due(scheduled, pending, now, promote)
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, limit)
local held = {}
for i = #ids, 1, -1 do
  local id = ids[i]
  local d = tonumber(redis.call('HGET', deliveries, id) or '0') + 1
  if redis.call('HEXISTS', tasks, id) == 0 then
    redis.call('ZREM', active, id)
    redis.call('HDEL', lease, id)
    redis.call('HDEL', deliveries, id)
  elseif d >= maxd then
    local env = redis.call('HGET', tasks, id)
    if string.find(env, '"group_id":"[^"]*@') then
      held[#held + 1] = id
      held[#held + 1] = env
    else
      bury(id, d)
    end
  else
    redis.call('ZREM', active, id)
    redis.call('HDEL', lease, id)
    redis.call('HSET', deliveries, id, d)
    redis.call('LPUSH', pending, id)
    requeued = requeued + 1
  end
end
if was_empty and (requeued > 0 or promoted > 0) then
  wake_one(wake)
end
local out = {requeued, buried, promoted}
for _, v in ipairs(held) do out[#out + 1] = v end
return out
