-- enqueue_levels: enqueue.lua for a call that holds a task of a priority level other than the default
-- (levels.lua); enqueue.lua itself is left as it is, so a queue that uses no levels pays nothing for them.
-- KEYS: tasks, pending, wake, scheduled, levels, high, low (see keySet in keys.go).
-- ARGV: as enqueue.lua's, except that a task's delay may carry its level: "<delay in ms>/<h|l>" (a plain number is
-- the default level).
-- Returns what enqueue.lua returns. A created task goes to the tail of its level's list, or to scheduled with its
-- level kept in levels; levels gets its marker field '*', which tells the pickup to take the levels in order.
local tasks, pending, wake, scheduled, levels = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local high, low = KEYS[6], KEYS[7]
local n = tonumber(ARGV[1])
local out = {}
if n == 0 then return out end
redis.call('HSET', levels, '*', '1')
local ready, cs, delayed = {}, {}, {}
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
    local d, c = string.match(ARGV[3 * i + 1], '^(%d+)/([hl])$')
    if not d then d, c = ARGV[3 * i + 1], 'n' end
    local delay = tonumber(d)
    if delay > 0 then
      delayed[#delayed + 1] = id
      delayed[#delayed + 1] = delay
      park_level(levels, id, c)
    else
      ready[#ready + 1] = id
      cs[#cs + 1] = c
    end
    out[i] = 1
  end
end
-- Delayed tasks through place (prelude.lua), which wakes a consumer when one becomes the earliest due; ready ones
-- to their levels' lists, with a wake-up when one of those was empty.
place(pending, scheduled, wake, nil, {}, delayed)
if #ready > 0 and push_levels(high, pending, low, ready, table.concat(cs), false) then wake_one(wake) end
return out
