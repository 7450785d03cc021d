-- dead: act on dead letters.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, deliveries, scheduled (passed on to
-- place, which does not touch it here), dead, errors, wake, levels, high and low, flow, ready, rotation and state.
-- ARGV[1] = "requeue" or "delete"; then pairs id, envelope ("" keeps the stored one; ignored by delete).
-- requeue moves each dead task to the tail of pending with a fresh delivery count; delete removes it (so the id
-- can be enqueued again).
-- A task of a priority level other than the default (levels.lua) is requeued to its level's list; both modes
-- drop its entry in levels.
-- A keyed task (flow.lua) is requeued to the tail of its key's FIFO; both modes drop its entry in flow.
-- Returns the number of tasks acted on (ids that were not dead are skipped).
local tasks, pending, deliveries, scheduled, dead = KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7]
local errors, wake = KEYS[8], KEYS[11]
local mode = ARGV[1]
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local lv = redis.call('EXISTS', levels) == 1
local n = 0
local ready, acted = {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('ZREM', dead, id) == 1 then
    redis.call('HDEL', errors, id)
    redis.call('HDEL', deliveries, id)
    if mode == 'delete' then
      redis.call('HDEL', tasks, id)
    else
      if ARGV[i + 1] ~= '' then redis.call('HSET', tasks, id, ARGV[i + 1]) end
      ready[#ready + 1] = id
    end
    n = n + 1
    acted[n] = id
  end
end
local flow = KEYS[21]
if n > 0 and redis.call('EXISTS', flow) == 1 then
  local fk = redis.call('HMGET', flow, unpack(acted))
  redis.call('HDEL', flow, unpack(acted))
  local kids, kfks, plain, j = {}, {}, {}, 1
  for i = 1, n do
    if acted[i] == ready[j] then
      if fk[i] then
        kids[#kids + 1] = ready[j]
        kfks[#kfks + 1] = fk[i]
      else
        plain[#plain + 1] = ready[j]
      end
      j = j + 1
    end
  end
  ready = plain
  if #kids > 0 and flow_push_keyed(flow, KEYS[22], KEYS[23], KEYS[24], kids, kfks, false) then wake_one(wake) end
end
-- Requeued in the order given, with one RPUSH (place, prelude.lua; nothing is scheduled).
if lv and n > 0 then
  if #ready > 0 then
    local lv = redis.call('HMGET', levels, unpack(ready))
    local cs = {}
    for i = 1, #ready do cs[i] = lv[i] or 'n' end
    if push_levels(high, pending, low, ready, table.concat(cs), false) then wake_one(wake) end
  end
  redis.call('HDEL', levels, unpack(acted))
  return n
end
place(pending, scheduled, wake, nil, ready, {})
return n
