-- extend: renew the leases of running deliveries, fenced by token.
-- KEYS: active, lease: only these two (see keySet in keys.go), which always exist together while a delivery is
-- leased, so that a renewal still runs while a Cluster moves the queue's slot (docs/scaling.md).
-- ARGV[1] = lease in ms; then pairs id, token.
-- Returns {now_ms, r1, r2, ...}: per pair 1 renewed, 0 lease lost.
local active, lease = KEYS[1], KEYS[2]
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local out = {now}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', lease, id) == ARGV[i + 1] then
    redis.call('ZADD', active, 'XX', now + lease_ms, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
