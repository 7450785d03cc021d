-- ack: complete deliveries, fenced by token; idempotent.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = settled window (how many settled ids to remember, 0 = none); then pairs id, token.
-- Returns one entry per pair: 1 acknowledged (now or by an earlier call with the same token); 0 lease lost.
local window = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[4], id) == tok then
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[5], id)
    if window > 0 then redis.call('ZADD', KEYS[9], tok, id) end
    out[#out + 1] = 1
  elseif tonumber(redis.call('ZSCORE', KEYS[9], id)) == tonumber(tok) then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if window > 0 then redis.call('ZREMRANGEBYRANK', KEYS[9], 0, -window - 1) end
return out
