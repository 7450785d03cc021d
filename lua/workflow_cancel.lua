-- workflow_cancel: cancel the nodes of a workflow that have not started.
-- KEYS[1] = the workflow's hash, KEYS[2] its done list, KEYS[3] tasks, KEYS[4] pending, KEYS[5] wake (runKeys,
-- group_delivery.go).
-- ARGV[1] = reason; ARGV[2..] = the task ids of the workflow's nodes.
-- A node that waits for its parents (its envelope still in the hash) and a released node still in pending (not
-- picked up: LREM, its envelope leaves tasks) are cancelled: outcome "3" .. reason (workflow.lua), counted as
-- completed. A node that was picked up (running, retrying or scheduled for a retry) is left to end as it does; its
-- children are cancelled already, so it advances nothing. The workflow's state becomes "cancelled"; when every
-- node has completed, the end is recorded and a wake-up pushed, as workflow_done does.
-- Returns {-1} when the hash is no workflow (gone, expired); else {cancelled, id of each node left running...}.
local gk, wk, tasks, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local m = redis.call('HMGET', gk, 'wf', 'total', 'ttl', 'done')
if not m[1] then return {-1} end
redis.call('HSET', gk, 'state', 'cancelled')
local out, n = {0}, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local st = redis.call('HMGET', gk, 'm:' .. id, 'e:' .. id)
  if st[1] == '' then
    local stop = false
    if st[2] then
      redis.call('HDEL', gk, 'e:' .. id)
      stop = true
    elseif redis.call('LREM', pending, 1, id) == 1 then
      redis.call('HDEL', tasks, id)
      stop = true
    else
      out[#out + 1] = id
    end
    if stop then
      redis.call('HSET', gk, 'm:' .. id, '3' .. ARGV[1])
      n = n + 1
    end
  end
end
out[1] = n
redis.call('PEXPIRE', gk, m[3])
if n > 0 and redis.call('HINCRBY', gk, 'done', n) == tonumber(m[2]) then
  redis.call('HSET', gk, 'ended', now_ms())
  redis.call('LPUSH', wk, '1')
  redis.call('PEXPIRE', wk, m[3])
end
return out
