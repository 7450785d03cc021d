-- ack: complete deliveries by their place in their pickup batch, fenced by that batch's lease record;
-- idempotent. A constant number of Redis calls per batch of the pickup.
-- KEYS: tasks, batches, leases, inflight, window: only the keys it touches (see keySet in keys.go;
-- docs/scaling.md tells why); then deliveries, only for a call with a delivery whose lease expired before (ARGV[4]
-- names its index), and for calls with group members or results (stride 4) the keys that ARGV names by index: a
-- group run's hash and its done list (two consecutive KEYS), or a result key.
-- ARGV[1] = settled window (how many acked ids keep a tombstone, 0 = none); ARGV[2] = stride: 2, 5, or 0 for the
-- check of a replay (below); ARGV[3] = TTL of a result key in ms; ARGV[4] = the KEYS index of deliveries, 0 when
-- not passed; then per pickup batch: its base token, the number c of its deliveries acked here, and per delivery
-- its position in the batch (1-based: token = base + position - 1), its task id (as the pickup returned it at
-- that position: the fence is the position's mark, and the ids under base .. ':ids' are not read) and, with
-- stride 5, the KEYS index of its group's hash (0 = none), the KEYS index of its result key (0 = none) and its
-- result ("" = none).
-- An ack overwrites the task's envelope with its tombstone, '~' .. token, and appends the id to window (entomb,
-- prelude.lua): enqueue.lua tells a replay of a completed task by it, and a resent ack by its token.
-- A group member's completion (with its result) is recorded by group_done (group.lua) when its ack happens now,
-- never on a repeated ack.
-- A pickup batch that leased keyed tasks (flow.lua) is named by its base token negated ('-' .. base): the call
-- then passes running, state, rotation and wake as its last four KEYS (keySet.ackFlow), and each delivery acked
-- here gives back its key's slot (flow_release), its key read from the batch's record. A call without such a
-- batch reads nothing more.
-- Returns one entry per delivery, in ARGV's order: 1 acknowledged (now or by an earlier call); 0 lease lost; 2
-- unknown: the batch's record is gone (all its deliveries settled, or its lease expired and was reclaimed), so the
-- caller asks again with stride 0 and ARGV[5..] = pairs id, token: 1 when the task's tombstone holds that token
-- (a resent ack), else 0.
local window, stride, rttl, dk = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local tasks, batches, leases, inflight, recent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local deliveries = KEYS[dk] -- nil when dk is 0 (not passed)
local out = {}
if stride == 0 then
  local ids = {}
  for i = 5, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
  if #ids == 0 then return out end
  local cur = redis.call('HMGET', tasks, unpack(ids))
  for j = 1, #ids do
    if cur[j] == '~' .. ARGV[4 + 2 * j] then out[j] = 1 else out[j] = 0 end
  end
  return out
end
local done, tombs, freed = {}, {}, {}
local a = 5
while a <= #ARGV do
  local b, c = ARGV[a], tonumber(ARGV[a + 1])
  local fk
  if string.byte(b, 1) == 45 then
    b = string.sub(b, 2)
    fk = flow_keys_of(batches, b)
  end
  local base = tonumber(b)
  a = a + 2
  local mask = record_of(batches, b)
  local marks
  for _ = 1, c do
    local pos, id = tonumber(ARGV[a]), ARGV[a + 1]
    local st = mask and string.sub(mask, pos, pos)
    if st == '-' then
      marks = marks or {string.byte(mask, 1, -1)}
      marks[pos] = 97 -- 'a'
      done[#done + 1] = id
      tombs[#tombs + 1] = id
      -- '%d' formats the token as an integer (exact below 2^53, as tokens are): a third of the cost of '%.0f'.
      tombs[#tombs + 1] = '~' .. string.format('%d', base + pos - 1)
      out[#out + 1] = 1
      if fk then freed[#freed + 1] = fk[pos] end
      if stride == 5 then
        local g, r = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
        if g > 0 then
          group_done(KEYS[g], KEYS[g + 1], id, '1' .. ARGV[a + 4])
        elseif r > 0 then
          redis.call('SET', KEYS[r], ARGV[a + 4], 'PX', rttl)
        end
      end
    elseif st == 'a' then
      out[#out + 1] = 1
    elseif st then
      out[#out + 1] = 0
    else
      out[#out + 1] = 2
    end
    a = a + stride
  end
  if marks then settled_batch(batches, leases, b, string.char(unpack(marks))) end
end
if #done > 0 then
  entomb(tasks, recent, window, done, tombs)
  redis.call('INCRBY', inflight, -#done)
  -- deliveries holds only tasks whose lease once expired: usually it does not exist, and is not passed.
  if deliveries then redis.call('HDEL', deliveries, unpack(done)) end
end
if #freed > 0 and flow_release(KEYS[#KEYS - 3], KEYS[#KEYS - 2], KEYS[#KEYS - 1], freed) then wake_one(KEYS[#KEYS]) end
return out
