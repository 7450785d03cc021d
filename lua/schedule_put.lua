-- schedule_put: create or replace a schedule's definition (schedule.go).
-- KEYS[1] = schedules (HASH name -> definition JSON), KEYS[2] = schedules:due (ZSET name -> when a scheduler
-- looks at it next, ms), KEYS[3] = schedules:state (HASH name -> state JSON, written only by the schedule scripts).
-- ARGV[1] = name, ARGV[2] = definition JSON (written by Go, never decoded here), ARGV[3] = the first due tick (ms,
-- computed by Go from the server clock), ARGV[4] = "create" or "update".
-- create refuses a name that exists; update refuses one that does not and keeps the run history and the paused
-- flag (a paused schedule stays paused, with its next tick recomputed). The state's rev counts the definitions.
-- Returns "ok", "exists" (create) or "missing" (update). Nothing is written unless it returns "ok".
-- A change is published on KEYS[1] .. ':wake' (the name), which wakes the idle schedulers of every process;
-- pcall: a user whose ACL refuses PUBLISH still stores the schedule (the schedulers then notice it at Recheck).
local defs, due, states = KEYS[1], KEYS[2], KEYS[3]
local name, def, nxt, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local exists = redis.call('HEXISTS', defs, name) == 1
local st = {}
if mode == 'create' then
  if exists then return 'exists' end
  st = {next = nxt, paused = 0, rev = 1}
elseif mode == 'update' then
  if not exists then return 'missing' end
  local raw = redis.call('HGET', states, name)
  if raw then
    local ok, v = pcall(cjson.decode, raw)
    if ok and type(v) == 'table' then st = v end
  end
  st.next = nxt
  st.rev = (tonumber(st.rev) or 0) + 1
  st.paused = tonumber(st.paused) or 0
else
  return redis.error_reply('unknown mode')
end
redis.call('HSET', defs, name, def)
redis.call('HSET', states, name, cjson.encode(st))
if st.paused == 1 then
  redis.call('ZREM', due, name)
else
  redis.call('ZADD', due, nxt, name)
end
redis.pcall('PUBLISH', defs .. ':wake', name)
return 'ok'
