-- ack: complete deliveries, fenced by token; idempotent. A constant number of Redis calls per batch.
-- KEYS: tasks, active, lease, settled: only the keys it touches (see keySet in keys.go; docs/scaling.md tells
-- why); then deliveries, only for a batch with a delivery whose lease expired before (ARGV[4] names its index), and
-- for batches with group members or results (stride 5) the keys that ARGV names by index: a group run's hash and
-- its done list (two consecutive KEYS), or a result key.
-- ARGV[1] = settled window (how many settled ids to remember, 0 = none); ARGV[2] = stride, 2 or 5; ARGV[3] = TTL
-- of a result key in ms; ARGV[4] = the KEYS index of deliveries, 0 when not passed (no delivery of the batch was
-- counted there: each was its task's first since it last settled); then per delivery: id, token and, with stride
-- 5, the KEYS index of its group's hash (0 = none), the KEYS index of its result key (0 = none) and its result
-- ("" = none).
-- settled scores each id token*4 + outcome, outcome 0 for ack (1 retry, 2 dead, 3 release: settle.lua).
-- A group member's completion (with its result) is recorded by group_done (group.lua) when its ack happens now,
-- never on a repeated ack.
-- Returns one entry per delivery: 1 acknowledged (now or by an earlier call with the same token); 0 lease lost.
local window, stride, rttl, dk = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local tasks, active, lease, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local deliveries = KEYS[dk] -- nil when dk is 0 (not passed)
local ids = {}
for i = 5, #ARGV, stride do ids[#ids + 1] = ARGV[i] end
local out = {}
if #ids == 0 then return out end
local cur = redis.call('HMGET', lease, unpack(ids))
local done, entries = {}, {}
for j, id in ipairs(ids) do
  local a = 5 + (j - 1) * stride
  local tok = ARGV[a + 1]
  if cur[j] == tok then
    done[#done + 1] = id
    -- A score as a number: Redis formats it in C, and any form it picks parses back to the same score. (A
    -- token, compared as a string, is never passed as a number: Redis 7.2+ may write it in exponent form.)
    entries[#entries + 1] = tonumber(tok) * 4
    entries[#entries + 1] = id
    out[j] = 1
    if stride == 5 then
      local g, r = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      if g > 0 then
        group_done(KEYS[g], KEYS[g + 1], id, '1' .. ARGV[a + 4])
      elseif r > 0 then
        redis.call('SET', KEYS[r], ARGV[a + 4], 'PX', rttl)
      end
    end
  elseif settled_as(settled, id, tonumber(tok) * 4) then
    out[j] = 1
  else
    out[j] = 0
  end
end
if #done > 0 then
  redis.call('HDEL', lease, unpack(done))
  redis.call('ZREM', active, unpack(done))
  redis.call('HDEL', tasks, unpack(done))
  -- deliveries holds only tasks whose lease once expired: usually it does not exist, and is not passed.
  if deliveries then redis.call('HDEL', deliveries, unpack(done)) end
  remember(settled, window, entries)
end
return out
