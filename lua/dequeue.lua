-- dequeue: promote due scheduled tasks, then lease up to n pending tasks.
-- KEYS: the queue's key set (see keys.go).
-- ARGV[1] = n, the most tasks to lease; ARGV[2] = lease in ms; ARGV[3] = most scheduled tasks to promote.
-- Returns {now_ms, next_due_in_ms (-1: nothing scheduled), id1, token1, deliveries1, envelope1, ...}.
-- Wakes one more consumer when it took a full batch and tasks remain.
local n, lease, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, promote)
if #due > 0 then
  redis.call('ZREM', KEYS[6], unpack(due))
  redis.call('RPUSH', KEYS[2], unpack(due))
end
local out = {now, -1}
local ids = redis.call('LPOP', KEYS[2], n)
if ids then
  local deadline = now + lease
  local last = redis.call('INCRBY', KEYS[10], #ids)
  local tok = last - #ids
  for _, id in ipairs(ids) do
    tok = tok + 1
    local env = redis.call('HGET', KEYS[1], id)
    if env then
      redis.call('ZADD', KEYS[3], deadline, id)
      redis.call('HSET', KEYS[4], id, tok)
      local d = redis.call('HINCRBY', KEYS[5], id, 1)
      out[#out + 1] = id
      out[#out + 1] = tok
      out[#out + 1] = d
      out[#out + 1] = env
    end
  end
  if #ids == n and redis.call('LLEN', KEYS[2]) > 0 then
    redis.call('LPUSH', KEYS[11], '1')
    redis.call('LTRIM', KEYS[11], 0, 63)
  end
end
local head = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if head[2] then
  local wait = tonumber(head[2]) - now
  if wait < 0 then wait = 0 end
  out[2] = wait
end
return out
