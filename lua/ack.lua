-- ack: complete deliveries, fenced by token; idempotent. A constant number of Redis calls per batch.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = settled window (how many settled ids to remember, 0 = none); then pairs id, token.
-- KEYS[9] (settled) scores each id token*4 + outcome, outcome 0 for ack (1 retry, 2 dead, 3 release: settle.lua).
-- Returns one entry per pair: 1 acknowledged (now or by an earlier call with the same token); 0 lease lost.
local window = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local out = {}
if #ids == 0 then return out end
local cur = redis.call('HMGET', KEYS[4], unpack(ids))
local done, settled = {}, {}
for j, id in ipairs(ids) do
  local tok = ARGV[2 * j + 1]
  if cur[j] == tok then
    done[#done + 1] = id
    settled[#settled + 1] = string.format('%.0f', tonumber(tok) * 4)
    settled[#settled + 1] = id
    out[j] = 1
  elseif tonumber(redis.call('ZSCORE', KEYS[9], id)) == tonumber(tok) * 4 then
    out[j] = 1
  else
    out[j] = 0
  end
end
if #done > 0 then
  redis.call('HDEL', KEYS[4], unpack(done))
  redis.call('ZREM', KEYS[3], unpack(done))
  redis.call('HDEL', KEYS[1], unpack(done))
  redis.call('HDEL', KEYS[5], unpack(done))
  if window > 0 then redis.call('ZADD', KEYS[9], unpack(settled)) end
  redis.call('ZREMRANGEBYRANK', KEYS[9], 0, -window - 1)
end
return out
