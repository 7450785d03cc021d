-- enqueue: add tasks, idempotently by task id. Two Redis calls per task at most, the rest once per call: Lua's
-- calls into Redis cost more than the data they move.
-- KEYS: tasks, pending, settled, wake and, only when a task of the call has a delay, scheduled: only the keys it
-- touches (see keySet in keys.go; docs/scaling.md tells why).
-- ARGV[1] = number of tasks n (at most a few hundred: the Go side sends 100 per call); then per task i (0-based):
--           ARGV[2+3i] = id, ARGV[3+3i] = envelope, ARGV[4+3i] = delay in ms (0 = ready now).
-- Returns one entry per task: 1 created; 0 the same envelope already exists; 2 the id was acked recently (it is
-- in settled with outcome 0, so this is a replay); or the existing envelope (a string) when it differs.
local tasks, pending, settled, wake, scheduled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = tonumber(ARGV[1])
local out = {}
if n == 0 then return out end
local ids = {}
for i = 1, n do ids[i] = ARGV[3 * i - 1] end
local scores = redis.call('ZMSCORE', settled, unpack(ids))
local now
local head_due
local push = false
local ready = {}
for i = 1, n do
  local id, env = ids[i], ARGV[3 * i]
  if scores[i] and tonumber(scores[i]) % 4 == 0 then
    out[i] = 2
  elseif redis.call('HSETNX', tasks, id, env) == 0 then
    local cur = redis.call('HGET', tasks, id)
    if cur == env then out[i] = 0 else out[i] = cur end
  else
    local delay = tonumber(ARGV[3 * i + 1])
    if delay > 0 then
      if not now then
        now = now_ms()
        local head = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
        if head[2] then head_due = tonumber(head[2]) end
      end
      local due = now + delay
      redis.call('ZADD', scheduled, due, id)
      if not head_due or due < head_due then
        head_due = due
        push = true
      end
    else
      ready[#ready + 1] = id
    end
    out[i] = 1
  end
end
-- One RPUSH for the ready tasks, in batch order; its reply (the new length) tells whether pending was empty.
if #ready > 0 and redis.call('RPUSH', pending, unpack(ready)) == #ready then push = true end
if push then
  wake_one(wake)
end
return out
