-- extend: renew the leases of running deliveries, fenced by their batch's lease record: one renewal per batch.
-- KEYS: leases, batches: only these two (see keySet in keys.go), which always exist together while a delivery is
-- leased, so that a renewal still runs while a Cluster moves the queue's slot (docs/scaling.md).
-- ARGV[1] = lease in ms; then per pickup batch: its base token, the number c of its deliveries named here, and
-- their positions in the batch (1-based).
-- The batch's deadline moves when one of the named deliveries is still leased ('-' in the record's mask,
-- record_of in prelude.lua).
-- Returns {now_ms, r1, r2, ...}: per delivery, in ARGV's order, 1 renewed, 0 lease lost.
local leases, batches = KEYS[1], KEYS[2]
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local out = {now}
local a = 2
while a <= #ARGV do
  local b, c = ARGV[a], tonumber(ARGV[a + 1])
  local mask = record_of(batches, b)
  local renew = false
  for i = a + 2, a + 1 + c do
    local pos = tonumber(ARGV[i])
    if mask and string.sub(mask, pos, pos) == '-' then
      renew = true
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  if renew then redis.call('ZADD', leases, now + lease_ms, b) end
  a = a + 2 + c
end
return out
