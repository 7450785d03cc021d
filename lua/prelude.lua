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

-- settled_as(settled, id, score): whether the settled window holds id with this score (token*4 + outcome), that
-- is whether the call that settles it so already ran: a resend.
local function settled_as(settled, id, score)
  return tonumber(redis.call('ZSCORE', settled, id)) == score
end

-- remember(settled, window, entries): add entries (pairs score, id) to the settled window, unless it is off
-- (window 0), and trim it to its newest window ids.
local function remember(settled, window, entries)
  if window > 0 then redis.call('ZADD', settled, unpack(entries)) end
  redis.call('ZREMRANGEBYRANK', settled, 0, -window - 1)
end
