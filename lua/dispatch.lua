-- dispatch: create a group run and enqueue all its members, all or nothing.
-- KEYS: the queue's key set (see keys.go), then KEYS[14] = the run's hash, KEYS[15] = its done list (unused here;
-- passed so that the run's keys travel together).
-- ARGV[1] = group name; ARGV[2] = TTL of the run's keys in ms; ARGV[3] = number of members n; then per member i
-- (0-based): ARGV[4+3i] = task id, ARGV[5+3i] = envelope, ARGV[6+3i] = delay in ms (0 = ready now).
-- The hash holds name, total, done (0), ttl, created (ms, server clock) and one field "m:<task id>" per member,
-- "" until the member completes (group.lua).
-- Returns {1} created; {0} the run exists already; {2, id} a member's task id exists already (nothing written).
local n, ttl = tonumber(ARGV[3]), ARGV[2]
if redis.call('EXISTS', KEYS[14]) == 1 then return {0} end
for i = 0, n - 1 do
  local id = ARGV[4 + 3 * i]
  if redis.call('HEXISTS', KEYS[1], id) == 1 or redis.call('ZSCORE', KEYS[9], id) then return {2, id} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = {'name', ARGV[1], 'total', n, 'done', 0, 'ttl', ttl, 'created', now}
local envs, ready = {}, {}
for i = 0, n - 1 do
  local id = ARGV[4 + 3 * i]
  fields[#fields + 1] = 'm:' .. id
  fields[#fields + 1] = ''
  envs[#envs + 1] = id
  envs[#envs + 1] = ARGV[5 + 3 * i]
end
redis.call('HSET', KEYS[14], unpack(fields))
redis.call('PEXPIRE', KEYS[14], ttl)
redis.call('HSET', KEYS[1], unpack(envs))
local was_empty = redis.call('LLEN', KEYS[2]) == 0
local head = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
local head_due = tonumber(head[2])
local wake = false
for i = 0, n - 1 do
  local id, delay = ARGV[4 + 3 * i], tonumber(ARGV[6 + 3 * i])
  if delay > 0 then
    local due = now + delay
    redis.call('ZADD', KEYS[6], due, id)
    if not head_due or due < head_due then
      head_due = due
      wake = true
    end
  else
    ready[#ready + 1] = id
  end
end
if #ready > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ready))
  if was_empty then wake = true end
end
if wake then
  redis.call('LPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
return {1}
