-- enqueue: add tasks, idempotently by task id.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = number of tasks n; then per task i (0-based): ARGV[2+3i] = id, ARGV[3+3i] = envelope,
--           ARGV[4+3i] = delay in ms (0 = ready now).
-- Returns one entry per task: 1 created; 0 the same envelope already exists; 2 the id was acked recently (it is
-- in KEYS[9] with outcome 0, so this is a replay); or the existing envelope (a string) when it differs.
local n = tonumber(ARGV[1])
local out = {}
local now
local head_due
local was_empty, wake = false, false
local pushed = 0
for i = 0, n - 1 do
  local id, env, delay = ARGV[2 + 3 * i], ARGV[3 + 3 * i], tonumber(ARGV[4 + 3 * i])
  local cur = redis.call('HGET', KEYS[1], id)
  if cur then
    if cur == env then out[i + 1] = 0 else out[i + 1] = cur end
  elseif (tonumber(redis.call('ZSCORE', KEYS[9], id)) or 1) % 4 == 0 then
    out[i + 1] = 2
  else
    redis.call('HSET', KEYS[1], id, env)
    if delay > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local head = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
        if head[2] then head_due = tonumber(head[2]) end
      end
      local due = now + delay
      redis.call('ZADD', KEYS[6], due, id)
      if not head_due or due < head_due then
        head_due = due
        wake = true
      end
    else
      -- RPUSH returns the new length: the first push tells whether pending was empty (no LLEN needed).
      pushed = pushed + 1
      if redis.call('RPUSH', KEYS[2], id) == pushed then was_empty = true end
    end
    out[i + 1] = 1
  end
end
if was_empty or wake then
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
return out
