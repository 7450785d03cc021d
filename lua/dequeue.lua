-- dequeue: promote due scheduled tasks, then lease up to n pending tasks. A constant number of Redis calls per
-- batch, whatever its size.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, active, lease, deliveries, scheduled,
-- seq, wake, paused and epoch.
-- ARGV[1] = n, the most tasks to lease; ARGV[2] = lease in ms; ARGV[3] = most scheduled tasks to promote.
-- Returns {now_ms, next_due_in_ms (-1: nothing scheduled), id1, token1, deliveries1, envelope1, ...}, where
-- deliveries counts this delivery and the ones lost before it (deliveries holds the lost count).
-- Wakes one more consumer when it took a full batch and tasks remain.
-- A suspect (a task whose lease expired before: it may crash its worker) is leased alone: the batch is cut
-- before the first suspect, or right after it when it comes first, and the rest goes back to the head. A worker
-- that crashes running a suspect then takes no batch-mates down with it.
-- While pickup is paused (paused exists) it still promotes due scheduled tasks but leases nothing and returns
-- {now_ms, -1}: a paused consumer blocks on the wake list until Resume pushes a wake-up (or its wait ends), rather
-- than waking up for each delayed task that falls due.
local tasks, pending, active, lease, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local scheduled, seq, wake, paused, epoch = KEYS[6], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local n, lease_ms, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
promote_due(scheduled, pending, now, promote)
local out = {now, -1}
if redis.call('EXISTS', paused) == 1 then return out end
local ids = redis.call('LPOP', pending, n)
if ids then
  local full = #ids == n
  -- deliveries holds only tasks whose lease expired: usually it does not exist, and reading it per task would
  -- cost more than the rest of the pickup.
  local lost = {}
  if redis.call('EXISTS', deliveries) == 1 then lost = redis.call('HMGET', deliveries, unpack(ids)) end
  for i = 1, #ids do
    if lost[i] then
      local cut = (i == 1) and 1 or i - 1
      if cut < #ids then
        local back = {}
        for j = #ids, cut + 1, -1 do
          back[#back + 1] = ids[j]
          ids[j] = nil
        end
        redis.call('LPUSH', pending, unpack(back))
        full = true
      end
      break
    end
  end
  local envs = redis.call('HMGET', tasks, unpack(ids))
  -- Formatted once: a number would be formatted again for each task when passed to ZADD.
  local deadline = string.format('%.0f', now + lease_ms)
  -- Tokens are epoch + seq. A missing epoch (a new queue, or a Redis restarted empty) is set from the server
  -- clock x 256, so tokens never repeat one handed out before a restart (unless deliveries averaged more than
  -- 256 per ms), and seq stays a plain count of deliveries.
  local base = redis.call('GET', epoch)
  if not base then
    base = string.format('%.0f', now * 256)
    redis.call('SET', epoch, base)
  end
  local count = redis.call('INCRBY', seq, #ids)
  local tok = tonumber(base) + count - #ids
  local zargs, hargs = {}, {}
  local k, o = 0, 2
  for i = 1, #ids do
    tok = tok + 1
    local env = envs[i]
    if env then
      local id = ids[i]
      zargs[k + 1] = deadline
      zargs[k + 2] = id
      hargs[k + 1] = id
      hargs[k + 2] = string.format('%.0f', tok)
      k = k + 2
      out[o + 1] = id
      out[o + 2] = tok
      out[o + 3] = (tonumber(lost[i]) or 0) + 1
      out[o + 4] = env
      o = o + 4
    end
  end
  if k > 0 then
    redis.call('ZADD', active, unpack(zargs))
    redis.call('HSET', lease, unpack(hargs))
  end
  if full and redis.call('LLEN', pending) > 0 then
    wake_one(wake)
  end
end
local head = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
if head[2] then
  local wait = tonumber(head[2]) - now
  if wait < 0 then wait = 0 end
  out[2] = wait
end
return out
