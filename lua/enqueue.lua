-- enqueue: add tasks, idempotently by task id. Two Redis calls per task at most, the rest once per call: Lua's
-- calls into Redis cost more than the data they move.
-- KEYS: tasks, pending, wake and, only when a task of the call has a delay, scheduled: only the keys it touches
-- (see keySet in keys.go; docs/scaling.md tells why).
-- ARGV[1] = number of tasks n (at most a few hundred: the Go side sends 100 per call); then per task i (0-based):
--           ARGV[2+3i] = id, ARGV[3+3i] = envelope, ARGV[4+3i] = delay in ms (0 = ready now).
-- Returns one entry per task: 1 created; 0 the same envelope already exists; 2 the id was acked recently (its
-- value in tasks is a tombstone, '~' .. token, written by ack.lua and kept for the settled window: this is a
-- replay); or the existing envelope (a string) when it differs.
local tasks, pending, wake, scheduled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = tonumber(ARGV[1])
local out = {}
if n == 0 then return out end
local ready, delayed = {}, {}
for i = 1, n do
  local id, env = ARGV[3 * i - 1], ARGV[3 * i]
  if redis.call('HSETNX', tasks, id, env) == 0 then
    local cur = redis.call('HGET', tasks, id)
    if cur == env then
      out[i] = 0
    elseif string.byte(cur, 1) == 126 then
      out[i] = 2
    else
      out[i] = cur
    end
  else
    local delay = tonumber(ARGV[3 * i + 1])
    if delay > 0 then
      delayed[#delayed + 1] = id
      delayed[#delayed + 1] = delay
    else
      ready[#ready + 1] = id
    end
    out[i] = 1
  end
end
-- The created tasks, in batch order: one RPUSH for the ready ones, a ZADD per delayed one (place, prelude.lua).
place(pending, scheduled, wake, nil, ready, delayed)
return out
