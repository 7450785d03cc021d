-- dead: act on dead letters.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = "requeue" or "delete"; then pairs id, envelope ("" keeps the stored one; ignored by delete).
-- requeue moves each dead task to the tail of pending with a fresh delivery count; delete removes it (and its
-- settled entry, so the id can be enqueued again).
-- Returns the number of tasks acted on (ids that were not dead are skipped).
local mode = ARGV[1]
local n = 0
local was_empty = redis.call('LLEN', KEYS[2]) == 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[7], id) == 1 then
    redis.call('HDEL', KEYS[8], id)
    redis.call('HDEL', KEYS[5], id)
    if mode == 'delete' then
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[9], id)
    else
      if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[1], id, ARGV[i + 1]) end
      redis.call('RPUSH', KEYS[2], id)
    end
    n = n + 1
  end
end
if mode ~= 'delete' and n > 0 and was_empty then
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
return n
