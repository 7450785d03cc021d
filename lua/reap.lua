-- reap: return deliveries whose lease expired, and promote due scheduled tasks. Bounded per call; safe to run
-- from any number of processes at once (each expired delivery is removed from KEYS[3] exactly once).
-- KEYS: the queue's key set (see keys.go), then the group run keys that the claims name (hash, done list).
-- ARGV[1] = most leases to reap; ARGV[2] = max deliveries (a task whose lease expired this many deliveries in a
--           row is dead-lettered; KEYS[5] counts the expired ones); ARGV[3] = most scheduled tasks to promote;
--           ARGV[4] = reason prefix for dead letters; ARGV[5..] = claims: pairs id, KEYS index of its group run
--           hash (0 = none).
-- A task due for the dead letters whose envelope may name a group run ('"group_id":"…@') is held: left as it is
-- and returned with its envelope, since its group's keys were not passed. The caller calls again with it as a
-- claim and its group's keys: if its lease is still expired, that call dead-letters it and completes its group
-- as failed (group_done, group.lua), in one script.
-- Returns {requeued, dead, promoted, held id1, envelope1, ...}.
local limit, maxd, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was_empty = redis.call('LLEN', KEYS[2]) == 0
local requeued, dead = 0, 0
local function bury(id, d)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('ZADD', KEYS[7], now, id)
  local why = ARGV[4] .. ' (' .. d .. ' deliveries, each lease expired)'
  redis.call('HSET', KEYS[8], id, why)
  dead = dead + 1
  return why
end
for i = 5, #ARGV, 2 do
  local id, g = ARGV[i], tonumber(ARGV[i + 1])
  local score = tonumber(redis.call('ZSCORE', KEYS[3], id))
  local d = tonumber(redis.call('HGET', KEYS[5], id) or '0') + 1
  if score and score <= now and d >= maxd and redis.call('HEXISTS', KEYS[1], id) == 1 then
    local why = bury(id, d)
    if g > 0 then group_done(KEYS[g], KEYS[g + 1], id, '0' .. why) end
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, promote)
if #due > 0 then
  redis.call('ZREM', KEYS[6], unpack(due))
  redis.call('RPUSH', KEYS[2], unpack(due))
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
local held = {}
for i = #ids, 1, -1 do
  local id = ids[i]
  local d = tonumber(redis.call('HGET', KEYS[5], id) or '0') + 1
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
  elseif d >= maxd then
    local env = redis.call('HGET', KEYS[1], id)
    if string.find(env, '"group_id":"[^"]*@') then
      held[#held + 1] = id
      held[#held + 1] = env
    else
      bury(id, d)
    end
  else
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HSET', KEYS[5], id, d)
    redis.call('LPUSH', KEYS[2], id)
    requeued = requeued + 1
  end
end
if was_empty and (requeued > 0 or #due > 0) then
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
local out = {requeued, dead, #due}
for _, v in ipairs(held) do out[#out + 1] = v end
return out
