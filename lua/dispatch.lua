-- dispatch: create a group run and enqueue all its members, all or nothing.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, scheduled and wake, then
-- run = the run's hash and its done list (unused here; passed so that the run's keys travel together).
-- ARGV[1] = group name; ARGV[2] = TTL of the run's keys in ms; ARGV[3] = number of members n; then per member i
-- (0-based): ARGV[4+3i] = task id, ARGV[5+3i] = envelope, ARGV[6+3i] = delay in ms (0 = ready now).
-- The run's hash holds name, total, done (0), ttl, created (ms, server clock) and one field "m:<task id>" per
-- member, "" until the member completes (group.lua).
-- Returns {1} created; {0} the run exists already; {2, id} a member's task id exists already (nothing written).
local tasks, pending, scheduled, wake = KEYS[1], KEYS[2], KEYS[6], KEYS[11]
local run = KEYS[#KEYS - 1] -- the first of the two keys after the key set
local n, ttl = tonumber(ARGV[3]), ARGV[2]
if redis.call('EXISTS', run) == 1 then return {0} end
for i = 0, n - 1 do
  local id = ARGV[4 + 3 * i]
  -- An id of tasks: a task, or a tombstone (acked recently, ack.lua).
  if redis.call('HEXISTS', tasks, id) == 1 then return {2, id} end
end
local now = now_ms()
local fields = {'name', ARGV[1], 'total', n, 'done', 0, 'ttl', ttl, 'created', now}
local envs, ready, delayed = {}, {}, {}
for i = 0, n - 1 do
  local id = ARGV[4 + 3 * i]
  fields[#fields + 1] = 'm:' .. id
  fields[#fields + 1] = ''
  envs[#envs + 1] = id
  envs[#envs + 1] = ARGV[5 + 3 * i]
end
redis.call('HSET', run, unpack(fields))
redis.call('PEXPIRE', run, ttl)
redis.call('HSET', tasks, unpack(envs))
for i = 0, n - 1 do
  local id, delay = ARGV[4 + 3 * i], tonumber(ARGV[6 + 3 * i])
  if delay > 0 then
    delayed[#delayed + 1] = id
    delayed[#delayed + 1] = delay
  else
    ready[#ready + 1] = id
  end
end
place(pending, scheduled, wake, now, ready, delayed)
return {1}
