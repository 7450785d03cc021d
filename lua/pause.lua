-- pause: pause or resume the pickup of tasks.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = "pause" or "resume".
-- pause sets KEYS[12] to the server time in ms, unless it is set (a repeated pause keeps the first time); while it
-- exists dequeue.lua leases nothing. resume deletes it and pushes a wake-up to KEYS[11] (capped at 64 like every
-- wake-up), so that a consumer blocked while paused leases at once; one that takes a full batch wakes the next
-- (dequeue.lua), so one token restarts every consumer that has work.
-- Returns 1 when the state changed, 0 when the queue already was paused (pause) or running (resume).
if ARGV[1] == 'pause' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if redis.call('SET', KEYS[12], now, 'NX') then return 1 end
  return 0
elseif ARGV[1] == 'resume' then
  local n = redis.call('DEL', KEYS[12])
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
  return n
end
return redis.error_reply('unknown mode')
