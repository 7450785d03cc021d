-- purge: remove up to n tasks of one state, oldest first, with everything stored about them. Bounded per call;
-- the caller loops.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, deliveries, scheduled, dead and
-- errors, and levels, high and low.
-- ARGV[1] = "pending", "scheduled" or "dead"; ARGV[2] = n, the most tasks to remove in this call (1 to 1000).
-- Each removed id leaves its state's key (pending, scheduled or dead) and tasks (envelope), deliveries (lost
-- deliveries) and, for dead letters, errors (reason); the id can be enqueued again. Active tasks are not purged:
-- workers hold their leases. Tombstones (ids acked recently) are not tasks: a purge leaves them.
-- A queue that uses priority levels (levels.lua) purges its pending tasks from every level, the highest first,
-- and the entries in levels of the scheduled and dead tasks it removes; left counts every level.
-- A queue that uses flow keys (flow.lua) purges its ready keyed tasks once its lists are empty, in key order,
-- and the keys of the scheduled and dead tasks it removes from flow; once none is ready, the rotation and the
-- states go too (no key has ready tasks). left counts them.
-- Returns {removed, left}, left being the number of tasks still in that state.
local tasks, pending, deliveries, scheduled, dead = KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7]
local errors = KEYS[8]
local state, n = ARGV[1], tonumber(ARGV[2])
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local lv = redis.call('EXISTS', levels) == 1
local ids, key
if state == 'pending' then
  key = pending
  if lv then ids = pop_levels(high, pending, low, n) else ids = redis.call('LPOP', key, n) end
  if not ids then ids = {} end
  if #ids < n and redis.call('EXISTS', KEYS[21]) == 1 then
    local fready = KEYS[22]
    local ms = redis.call('ZRANGE', fready, 0, n - #ids - 1)
    if #ms > 0 then
      redis.call('ZREM', fready, unpack(ms))
      for _, m in ipairs(ms) do ids[#ids + 1] = string.sub(m, string.find(m, ' ', 1, true) + 16) end
    end
    if redis.call('ZCARD', fready) == 0 then
      redis.call('DEL', KEYS[23])
      redis.call('DEL', KEYS[24])
      redis.call('DEL', KEYS[25])
    end
  end
elseif state == 'scheduled' or state == 'dead' then
  if state == 'scheduled' then key = scheduled else key = dead end
  ids = redis.call('ZRANGE', key, 0, n - 1)
  if #ids > 0 then redis.call('ZREM', key, unpack(ids)) end
else
  return redis.error_reply('unknown state')
end
if #ids > 0 then
  redis.call('HDEL', tasks, unpack(ids))
  redis.call('HDEL', deliveries, unpack(ids))
  if state == 'dead' then redis.call('HDEL', errors, unpack(ids)) end
  if lv and state ~= 'pending' then redis.call('HDEL', levels, unpack(ids)) end
  if state ~= 'pending' then redis.call('HDEL', KEYS[21], unpack(ids)) end
end
local left
if state == 'pending' then
  left = redis.call('LLEN', key)
  if lv then left = left + redis.call('LLEN', high) + redis.call('LLEN', low) end
  left = left + redis.call('ZCARD', KEYS[22])
else left = redis.call('ZCARD', key) end
return {#ids, left}
