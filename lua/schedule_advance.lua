-- schedule_advance: record the ticks a scheduler fired and move the schedule to its next tick (scheduler.go).
-- KEYS[1] = schedules, KEYS[2] = schedules:due, KEYS[3] = schedules:state (see schedule_put.lua).
-- ARGV[1] = name, ARGV[2] = the due tick the scheduler started from (ms), ARGV[3] = the next tick (ms),
-- ARGV[4] = the last tick fired (ms; 0 if the pass fired none, the missed ticks being skipped), ARGV[5] = its task id.
-- ARGV[2] = "-" matches a state without a next tick (a state record lost or unreadable), so that it recovers.
-- A compare-and-set on the state's next tick: only the first scheduler to finish a tick moves the schedule on; a
-- later one (it fired the same task ids, which the idempotent enqueue absorbed) changes nothing, and neither does
-- one whose schedule was updated, paused, resumed or deleted meanwhile. Either way the due entry of an active
-- schedule ends at its state's next tick, which undoes the claim of schedule_due.lua.
-- Returns 1 when the schedule moved on, 0 otherwise.
local defs, due, states = KEYS[1], KEYS[2], KEYS[3]
local name = ARGV[1]
if redis.call('HEXISTS', defs, name) == 0 then return 0 end
local raw = redis.call('HGET', states, name)
local ok, st = pcall(cjson.decode, raw or '')
if not ok or type(st) ~= 'table' then st = {} end
local moved = 0
if (ARGV[2] == '-' and not tonumber(st.next)) or tonumber(st.next) == tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  st.next = tonumber(ARGV[3])
  if tonumber(ARGV[4]) > 0 then
    st.last = tonumber(ARGV[4])
    st.ran = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    st.task = ARGV[5]
  end
  redis.call('HSET', states, name, cjson.encode(st))
  moved = 1
end
if tonumber(st.paused) == 1 or not tonumber(st.next) then
  redis.call('ZREM', due, name)
else
  redis.call('ZADD', due, tonumber(st.next), name)
end
return moved
