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
