-- schedule_due: claim the schedules that are due, for one scheduler pass (scheduler.go).
-- KEYS[1] = schedules, KEYS[2] = schedules:due, KEYS[3] = schedules:state (see schedule_put.lua).
-- ARGV[1] = the most schedules to claim, ARGV[2] = the claim in ms.
-- A claim only saves work: it moves the schedule's entry in due to now + claim, so that other schedulers skip it
-- while this one fires its ticks (schedule_advance.lua then sets the entry to the next tick). A scheduler that
-- dies with a claim delays the tick by at most the claim; correctness never depends on it, since a tick's task
-- id is derived from the tick and the enqueue is idempotent.
-- Returns {now (server ms), the earliest entry of due after the claims (ms, -1 if none), then name, definition,
-- state for each claimed schedule}. An entry without a definition is dropped.
local defs, due, states = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {now, -1}
for _, name in ipairs(names) do
  local def = redis.call('HGET', defs, name)
  if def then
    redis.call('ZADD', due, now + tonumber(ARGV[2]), name)
    out[#out + 1] = name
    out[#out + 1] = def
    out[#out + 1] = redis.call('HGET', states, name) or ''
  else
    redis.call('ZREM', due, name)
  end
end
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] then out[2] = tonumber(first[2]) end
return out
