-- schedule_ctl: pause, resume, delete a schedule, or record a run triggered by hand (schedule.go).
-- KEYS[1] = schedules, KEYS[2] = schedules:due, KEYS[3] = schedules:state (see schedule_put.lua).
-- ARGV[1] = "pause", "resume", "delete" or "ran", ARGV[2] = name, ARGV[3] = for resume the next tick (ms,
-- computed by Go from the server clock: the ticks of the pause are skipped), for ran the task id.
-- pause takes the schedule out of due (no scheduler looks at it) and sets the paused flag; resume clears it and
-- puts the schedule back at ARGV[3]; delete removes all three entries; ran records the run's time and task id.
-- Returns 1 when the state changed, 0 when it already was as asked (pause, resume), -1 when no such schedule.
-- A change is published on KEYS[1] .. ':wake' (see schedule_put.lua), which wakes the idle schedulers.
local defs, due, states = KEYS[1], KEYS[2], KEYS[3]
local op, name = ARGV[1], ARGV[2]
if redis.call('HEXISTS', defs, name) == 0 then return -1 end
if op == 'delete' then
  redis.call('HDEL', defs, name)
  redis.call('HDEL', states, name)
  redis.call('ZREM', due, name)
  redis.pcall('PUBLISH', defs .. ':wake', name)
  return 1
end
local raw = redis.call('HGET', states, name)
local ok, st = pcall(cjson.decode, raw or '')
if not ok or type(st) ~= 'table' then st = {} end
local paused = tonumber(st.paused) == 1
local changed = 1
if op == 'pause' then
  if paused then return 0 end
  st.paused = 1
  redis.call('ZREM', due, name)
elseif op == 'resume' then
  if not paused then return 0 end
  st.paused = 0
  st.next = tonumber(ARGV[3])
  redis.call('ZADD', due, st.next, name)
elseif op == 'ran' then
  local t = redis.call('TIME')
  st.ran = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  st.task = ARGV[3]
else
  return redis.error_reply('unknown mode')
end
redis.call('HSET', states, name, cjson.encode(st))
redis.pcall('PUBLISH', defs .. ':wake', name)
return changed
