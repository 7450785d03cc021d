-- pause: pause or resume the pickup of tasks.
-- KEYS: the queue's key set (see keys.go), of which it uses wake and paused.
-- ARGV[1] = "pause" or "resume".
-- pause sets paused to the server time in ms, unless it is set (a repeated pause keeps the first time); while it
-- exists dequeue.lua leases nothing. resume deletes it and pushes a wake-up to wake (capped at 64 like every
-- wake-up), so that a consumer blocked while paused leases at once; one that takes a full batch wakes the next
-- (dequeue.lua), so one token restarts every consumer that has work.
-- Returns 1 when the state changed, 0 when the queue already was paused (pause) or running (resume).
local wake, paused = KEYS[11], KEYS[12]
if ARGV[1] == 'pause' then
  local now = now_ms()
  if redis.call('SET', paused, now, 'NX') then return 1 end
  return 0
elseif ARGV[1] == 'resume' then
  local n = redis.call('DEL', paused)
  wake_one(wake)
  return n
end
return redis.error_reply('unknown mode')
