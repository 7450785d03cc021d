-- prelude: functions the scripts share; each script is sent with those it calls, above its own code (withPrelude,
-- scripts.go). Each takes the keys it touches as parameters, which every caller passes from the names it bound
-- from KEYS; none makes a Redis call that the code it replaced did not make.

-- now_ms(): the server clock (TIME) in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- wake_one(wake): push one wake-up token to the wake list, which never holds more than 64 (a token carries no
-- task data: a consumer blocked on the list wakes and leases).
local function wake_one(wake)
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 63)
end

-- place(pending, scheduled, wake, now, ready, delayed): make new tasks runnable. Appends the ids in ready to
-- pending in their order (one RPUSH, whose reply tells whether pending was empty) and schedules delayed (pairs id,
-- delay in ms > 0) at now + delay, now being read from the server clock when nil; scheduled is read and written
-- only when delayed is not empty. Pushes a wake-up when pending was empty or a task became the earliest one due.
local function place(pending, scheduled, wake, now, ready, delayed)
  local push = false
  if #delayed > 0 then
    now = now or now_ms()
    local head = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
    local head_due = tonumber(head[2])
    for i = 1, #delayed, 2 do
      local due = now + delayed[i + 1]
      redis.call('ZADD', scheduled, due, delayed[i])
      if not head_due or due < head_due then
        head_due = due
        push = true
      end
    end
  end
  if #ready > 0 and redis.call('RPUSH', pending, unpack(ready)) == #ready then push = true end
  if push then wake_one(wake) end
end

-- promote_due(scheduled, pending, now, limit): move up to limit scheduled tasks due by now to the tail of
-- pending, earliest first; returns how many moved.
local function promote_due(scheduled, pending, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', scheduled, unpack(due))
    redis.call('RPUSH', pending, unpack(due))
  end
  return #due
end

-- record_of(batches, base): the mask of the lease record of the pickup batch whose first token is base: one
-- character per task ('-' leased, 'a' acked, 'r' retried, 'd' dead-lettered, 'k' dead-lettered as stored, 'l'
-- released, 'x' reclaimed), or nil when there is none. The batch's ids are beside it, under base .. ':ids' (ids_of).
local function record_of(batches, base)
  return redis.call('HGET', batches, base)
end

-- ids_of(batches, base): the ids of the pickup batch whose first token is base, in batch order (a JSON array under
-- base .. ':ids').
local function ids_of(batches, base)
  return cjson.decode(redis.call('HGET', batches, base .. ':ids'))
end

-- settled_batch(batches, leases, b, mask): store the new mask of the pickup batch b, or, when none of its
-- deliveries is left leased ('-') and none settled in a way that only its mark tells a resend of ('l' released,
-- 'k' dead-lettered as stored: settle.lua), delete its record and its lease: a resent ack is then told by its
-- tombstone, a resent retry or dead letter by the envelope it wrote.
local function settled_batch(batches, leases, b, mask)
  if string.find(mask, '[-lk]') then
    redis.call('HSET', batches, b, mask)
  else
    redis.call('HDEL', batches, b, b .. ':ids', b .. ':lv', b .. ':k')
    redis.call('ZREM', leases, b)
  end
end

-- entomb(tasks, recent, window, ids, tombs): the settled window. Unless it is off (window 0), overwrites each
-- acked task's envelope with its tombstone (tombs: pairs id, '~' .. token), appends the ids to the FIFO list
-- recent and trims it to window ids, deleting the values of the ids it drops that are still tombstones; with the
-- window off, deletes the envelopes.
local function entomb(tasks, recent, window, ids, tombs)
  if window <= 0 then
    redis.call('HDEL', tasks, unpack(ids))
    return
  end
  redis.call('HSET', tasks, unpack(tombs))
  -- At most 1000 dropped per call (a window made much smaller shrinks over several calls).
  local over = math.min(redis.call('RPUSH', recent, unpack(ids)) - window, 1000)
  if over > 0 then
    local old = redis.call('LPOP', recent, over)
    local vals = redis.call('HMGET', tasks, unpack(old))
    local gone = {}
    for i = 1, #old do
      if vals[i] and string.byte(vals[i], 1) == 126 then gone[#gone + 1] = old[i] end
    end
    if #gone > 0 then redis.call('HDEL', tasks, unpack(gone)) end
  end
end
