-- extend: renew the leases of running deliveries, fenced by token.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = lease in ms; then pairs id, token.
-- Returns {now_ms, r1, r2, ...}: per pair 1 renewed, 0 lease lost.
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[3], 'XX', now + lease, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
