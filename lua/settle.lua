-- settle: end a delivery other than by ack, fenced by token; idempotent.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, active, lease, deliveries, scheduled,
-- dead, errors, settled and wake, then for a dead-lettered group member its run's keys (ARGV[8]).
-- ARGV[1] = mode: "retry" (back to pending, or scheduled after a delay), "dead" (dead-letter with a reason),
--           "release" (hand back to the head of pending; not counted as a lost delivery);
-- ARGV[2] = settled window; ARGV[3] = id; ARGV[4] = token; ARGV[5] = new envelope ("" keeps the stored one);
-- ARGV[6] = delay in ms (retry); ARGV[7] = reason (dead); ARGV[8] = KEYS index of the task's group run hash, its
-- done list next (0 or absent = none; KEYS beyond the queue's key set): a dead-lettered group member completes
-- its group as failed with the reason (group_done, group.lua). A retry or release does not complete it.
-- Returns 1 done (now or by an earlier call with the same token and mode); 0 lease lost.
-- settled scores the id token*4 + outcome (retry 1, dead 2, release 3; ack.lua writes 0).
-- A call resent after its reply was lost is recognised by that score or, once the bounded window dropped it (or
-- when it is off), by the envelope it wrote: a retry's or dead letter's envelope holds the attempt count, the error
-- and the failure time, so no other call writes the same bytes. A resend writes nothing.
local tasks, pending, active, lease, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local scheduled, dead, errors, settled, wake = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[11]
local mode, window, id, tok, env = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local outcome = ({retry = 1, dead = 2, release = 3})[mode]
if not outcome then return redis.error_reply('unknown mode') end
local score = tonumber(tok) * 4 + outcome
if redis.call('HGET', lease, id) ~= tok then
  if settled_as(settled, id, score) then return 1 end
  if env ~= '' and redis.call('HGET', tasks, id) == env then return 1 end
  return 0
end
redis.call('HDEL', lease, id)
redis.call('ZREM', active, id)
if env ~= '' then redis.call('HSET', tasks, id, env) end
local now = now_ms()
if mode == 'release' then
  if redis.call('LPUSH', pending, id) == 1 then wake_one(wake) end
elseif mode == 'dead' then
  redis.call('HDEL', deliveries, id)
  redis.call('ZADD', dead, now, id)
  redis.call('HSET', errors, id, ARGV[7])
else
  redis.call('HDEL', deliveries, id)
  local delay = tonumber(ARGV[6])
  if delay > 0 then
    place(pending, scheduled, wake, now, {}, {id, delay})
  else
    place(pending, scheduled, wake, now, {id}, {})
  end
end
if mode == 'dead' then
  local g = tonumber(ARGV[8] or '0')
  if g > 0 then group_done(KEYS[g], KEYS[g + 1], id, '0' .. ARGV[7]) end
end
remember(settled, window, {string.format('%.0f', score), id})
return 1
