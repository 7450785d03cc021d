-- purge: remove up to n tasks of one state, oldest first, with everything stored about them. Bounded per call;
-- the caller loops.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = "pending", "scheduled" or "dead"; ARGV[2] = n, the most tasks to remove in this call (1 to 1000).
-- Each removed id leaves its state's key (KEYS[2], KEYS[6] or KEYS[7]) and KEYS[1] (envelope), KEYS[5] (lost
-- deliveries), KEYS[9] (settled: the id can be enqueued again) and, for dead letters, KEYS[8] (reason). Active
-- tasks are not purged: workers hold their leases.
-- Returns {removed, left}, left being the number of tasks still in that state.
local state, n = ARGV[1], tonumber(ARGV[2])
local ids, key
if state == 'pending' then
  key = KEYS[2]
  ids = redis.call('LPOP', key, n)
  if not ids then ids = {} end
elseif state == 'scheduled' or state == 'dead' then
  if state == 'scheduled' then key = KEYS[6] else key = KEYS[7] end
  ids = redis.call('ZRANGE', key, 0, n - 1)
  if #ids > 0 then redis.call('ZREM', key, unpack(ids)) end
else
  return redis.error_reply('unknown state')
end
if #ids > 0 then
  redis.call('HDEL', KEYS[1], unpack(ids))
  redis.call('HDEL', KEYS[5], unpack(ids))
  redis.call('ZREM', KEYS[9], unpack(ids))
  if state == 'dead' then redis.call('HDEL', KEYS[8], unpack(ids)) end
end
local left
if state == 'pending' then left = redis.call('LLEN', key) else left = redis.call('ZCARD', key) end
return {#ids, left}
