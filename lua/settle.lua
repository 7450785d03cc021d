-- settle: end one delivery other than by ack, fenced by its batch's lease record; idempotent.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, deliveries, scheduled, dead, errors,
-- wake, leases, batches and inflight, levels, high and low, flow, ready, rotation, state and running, then for a dead-lettered group member its run's keys
-- (ARGV[8]).
-- ARGV[1] = mode: "retry" (back to pending, or scheduled after a delay), "dead" (dead-letter with a reason),
--           "release" (hand back to the head of pending; not counted as a lost delivery);
-- ARGV[2] = id; ARGV[3] = base token of its pickup batch; ARGV[4] = its position in the batch (1-based);
-- ARGV[5] = new envelope ("" keeps the stored one); ARGV[6] = delay in ms (retry); ARGV[7] = reason (dead);
-- ARGV[8] = KEYS index of the task's group run hash, its done list next (0 = none; KEYS beyond the queue's key
-- set): a dead-lettered group member completes its group as failed with the reason (group_done, group.lua). A
-- retry or release does not complete it.
-- The position's mark in the batch's record becomes 'r', 'd' or 'l', or 'k' for a dead letter kept as stored
-- (record_of, prelude.lua). A call resent after its reply was lost is recognised by the envelope it wrote, when it
-- wrote one (a retry's or dead letter's holds the attempt count, the error and the failure time, so no other call
-- writes the same bytes), or else (a release, a dead letter kept as stored) by its mark. A resend writes nothing.
-- When no delivery of the batch is left leased, the record and its lease go (settled_batch, prelude.lua), unless
-- a mark is still needed for a resend ('l', 'k'): then they stay until the lease deadline, when reap.lua
-- removes them.
-- A task keeps its priority level (levels.lua): a retry or release goes back to its level's list, a delayed retry
-- or a dead letter keeps its level in levels.
-- A keyed task (flow.lua; its key in its batch's record) gives back its key's slot, and keeps its key: a retry goes
-- to the tail of its key's FIFO, a release to its head, a delayed retry or a dead letter keeps its key in flow.
-- Returns 1 done (now or by an earlier call with the same mode); 0 lease lost.
local tasks, pending, deliveries, scheduled = KEYS[1], KEYS[2], KEYS[5], KEYS[6]
local dead, errors, wake, leases, batches, inflight = KEYS[7], KEYS[8], KEYS[11], KEYS[14], KEYS[15], KEYS[16]
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local mode, id, b, pos, env = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local mark = ({retry = 'r', dead = 'd', release = 'l'})[mode]
if not mark then return redis.error_reply('unknown mode') end
if mark == 'd' and env == '' then mark = 'k' end
local mask = record_of(batches, b)
local st = mask and string.sub(mask, pos, pos)
if st ~= '-' or ids_of(batches, b)[pos] ~= id then
  if env ~= '' then
    if redis.call('HGET', tasks, id) == env then return 1 end
  elseif st == mark then
    return 1
  end
  return 0
end
local c = level_at(batches, b, pos) -- before settled_batch, which may delete the record with its levels
local fks = flow_keys_of(batches, b)
local fk = fks and fks[pos] ~= '' and fks[pos]
settled_batch(batches, leases, b, string.sub(mask, 1, pos - 1) .. mark .. string.sub(mask, pos + 1))
redis.call('INCRBY', inflight, -1)
if env ~= '' then redis.call('HSET', tasks, id, env) end
local now = now_ms()
if fk then
  local flow, fready, rot, state, running = KEYS[21], KEYS[22], KEYS[23], KEYS[24], KEYS[26]
  local woke = flow_release(running, state, rot, {fk})
  if mode == 'release' then
    woke = flow_push(flow, fready, rot, state, fk, {id}, true) or woke
  elseif mode == 'dead' then
    redis.call('HDEL', deliveries, id)
    redis.call('ZADD', dead, now, id)
    redis.call('HSET', errors, id, ARGV[7])
    redis.call('HSET', flow, id, fk)
  else
    redis.call('HDEL', deliveries, id)
    local delay = tonumber(ARGV[6])
    if delay > 0 then
      place(pending, scheduled, wake, now, {}, {id, delay})
      redis.call('HSET', flow, id, fk)
    else
      woke = flow_push(flow, fready, rot, state, fk, {id}, false) or woke
    end
  end
  if woke then wake_one(wake) end
  return 1
end
if c == 'h' then pending = high end
if c == 'l' then pending = low end
if mode == 'release' then
  if redis.call('LPUSH', pending, id) == 1 then wake_one(wake) end
elseif mode == 'dead' then
  redis.call('HDEL', deliveries, id)
  redis.call('ZADD', dead, now, id)
  redis.call('HSET', errors, id, ARGV[7])
  park_level(levels, id, c)
  local g = tonumber(ARGV[8] or '0')
  if g > 0 then group_done(KEYS[g], KEYS[g + 1], id, '0' .. ARGV[7]) end
else
  redis.call('HDEL', deliveries, id)
  local delay = tonumber(ARGV[6])
  if delay > 0 then
    place(pending, scheduled, wake, now, {}, {id, delay})
    park_level(levels, id, c)
  else
    place(pending, scheduled, wake, now, {id}, {})
  end
end
return 1
