-- enqueue_flow: enqueue.lua for a call that holds a task with a flow key (flow.lua); enqueue.lua itself is left as
-- it is, so a queue that uses no keys pays nothing for them.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, wake, scheduled, levels, high, low,
-- flow, ready, rotation and state.
-- ARGV: as enqueue.lua's, except that a task's delay may carry its level or its key: "<delay in ms>/<h|l>" (as
-- enqueue_levels.lua) or "<delay in ms>/k:<flow key>" (a keyed task is of the default level); a plain number is
-- an unkeyed task of the default level.
-- Returns what enqueue.lua returns. A created keyed task goes to the tail of its key's FIFO in ready (its key
-- joining the rotation if it had no state), or to scheduled with its key kept in flow; flow gets its marker field
-- '*', which tells the pickup to take keyed tasks by rotation.
local tasks, pending, scheduled, wake = KEYS[1], KEYS[2], KEYS[6], KEYS[11]
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local flow, fready, rot, state = KEYS[21], KEYS[22], KEYS[23], KEYS[24]
local n = tonumber(ARGV[1])
local out = {}
if n == 0 then return out end
redis.call('HSET', flow, '*', '1')
local ready_ids, cs, kids, kfks, delayed = {}, {}, {}, {}, {}
local leveled = false
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
    local d, tag = string.match(ARGV[3 * i + 1], '^(%d+)/(.+)$')
    if not d then d, tag = ARGV[3 * i + 1], 'n' end
    local delay = tonumber(d)
    local fk
    if string.sub(tag, 1, 2) == 'k:' then fk = string.sub(tag, 3) end
    if delay > 0 then
      delayed[#delayed + 1] = id
      delayed[#delayed + 1] = delay
      if fk then
        redis.call('HSET', flow, id, fk)
      elseif tag ~= 'n' then
        redis.call('HSET', levels, '*', '1')
        park_level(levels, id, tag)
      end
    elseif fk then
      kids[#kids + 1] = id
      kfks[#kfks + 1] = fk
    else
      ready_ids[#ready_ids + 1] = id
      cs[#cs + 1] = tag
      if tag ~= 'n' then leveled = true end
    end
    out[i] = 1
  end
end
place(pending, scheduled, wake, nil, {}, delayed)
local woke = false
if leveled then
  redis.call('HSET', levels, '*', '1')
  if push_levels(high, pending, low, ready_ids, table.concat(cs), false) then woke = true end
elseif #ready_ids > 0 and redis.call('RPUSH', pending, unpack(ready_ids)) == #ready_ids then
  woke = true
end
if #kids > 0 and flow_push_keyed(flow, fready, rot, state, kids, kfks, false) then woke = true end
if woke then wake_one(wake) end
return out
