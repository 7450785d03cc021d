-- cancel: cancel or delete one task by id, wherever it is; one script, so that no delivery can slip between the
-- look and the write (an ack, a retry or the reaper waits until it is done). See docs/control.md.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, active, lease, deliveries, scheduled,
-- dead, errors, leases, batches, inflight, levels, pending:high, pending:low, flow, flow:ready, flow:rotation,
-- flow:state and flow:running; then KEYS[#all + 1] = cancelled
-- (ZSET id -> when cancelled, ms), KEYS[#all + 2] = the task's progress key, and, when ARGV[5] is 1, that run's
-- keys (runKeys, group_delivery.go: its hash and done list, and for a workflow its tasks, pending and wake).
-- ARGV[1] = mode: "cancel" or "delete"; ARGV[2] = task id; ARGV[3] = retention of cancelled tasks in ms;
-- ARGV[4] = the number of KEYS of the key set (where the extra KEYS start); ARGV[5] = 1 when the group run's keys
-- follow (the task's stored envelope names a group run), else 0.
-- Where the task is, and what each mode does:
--   pending, scheduled (retry included): cancel and delete take it out at once;
--   active (a '-' in a lease record of batches, or the previous layout's active): cancel marks its position 'c'
--     (ack, extend and settle then refuse it, and the reaper never gives it back), counts it out of inflight and
--     publishes its id on the control channel (cancelled .. ':notify', keys.go), so that the worker running it
--     cancels its context; delete refuses;
--   dead: delete removes it (as DeleteDead does); cancel refuses (it already finished);
--   cancelled (its value in tasks is '~c' .. envelope): delete removes the record; cancel refuses;
--   acked (a tombstone, '~' .. token) or unknown: both refuse.
-- A cancelled task keeps its id in tasks as '~c' .. its envelope: pickup drops any value that starts with '~'
-- (dequeue.lua), so a stray copy of its id can never start it, and enqueue.lua reads the id as finished. It is
-- scored in cancelled by the time of the cancel; records older than the retention are dropped, up to 100 per call.
-- A group member that is cancelled or deleted before it completed completes its run as cancelled
-- (group_done, outcome "3" .. reason, as a workflow's cancelled node), so the run's waiter is released.
-- Returns {code, state}: code 1 done; 0 not found; 2 already finished (state: "done", "dead" or "cancelled");
-- 3 refused: the task is running (delete). state is where the task was.
local tasks, pending, active, lease, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local scheduled, dead, errors = KEYS[6], KEYS[7], KEYS[8]
local leases, batches, inflight = KEYS[14], KEYS[15], KEYS[16]
local mode, id, keep, nk = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cancelled, progress = KEYS[nk + 1], KEYS[nk + 2]
local gk, gw
if ARGV[5] == '1' then gk, gw = KEYS[nk + 3], KEYS[nk + 4] end
local now = now_ms()

-- Drop cancelled records past their retention (a bounded amount per call).
local old = redis.call('ZRANGEBYSCORE', cancelled, '-inf', now - keep, 'LIMIT', 0, 100)
if #old > 0 then
  local vals = redis.call('HMGET', tasks, unpack(old))
  for i = 1, #old do
    if vals[i] and string.sub(vals[i], 1, 2) == '~c' then redis.call('HDEL', tasks, old[i]) end
  end
  redis.call('ZREM', cancelled, unpack(old))
end

local v = redis.call('HGET', tasks, id)
if not v then return {0, ''} end
if string.byte(v, 1) == 126 then
  if string.sub(v, 2, 2) ~= 'c' then return {2, 'done'} end
  if mode ~= 'delete' then return {2, 'cancelled'} end
  redis.call('HDEL', tasks, id)
  redis.call('ZREM', cancelled, id)
  redis.call('DEL', progress)
  return {1, 'cancelled'}
end
if redis.call('ZSCORE', dead, id) then
  if mode ~= 'delete' then return {2, 'dead'} end
  redis.call('ZREM', dead, id)
  redis.call('HDEL', errors, id)
  redis.call('HDEL', tasks, id)
  redis.call('HDEL', deliveries, id)
  redis.call('HDEL', KEYS[18], id) -- its level, if it has one (levels.lua)
  redis.call('HDEL', KEYS[21], id) -- its flow key, if it has one (flow.lua)
  redis.call('DEL', progress)
  return {1, 'dead'}
end

-- A queue with priority levels (levels.lua) keeps a task of another level in its level's list, and the level of
-- a delayed one in levels.
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local leveled = redis.call('EXISTS', levels) == 1
local flow, fready, frot, fstate, frun = KEYS[21], KEYS[22], KEYS[23], KEYS[24], KEYS[26]
local keyed = redis.call('EXISTS', flow) == 1
local function unqueue()
  if redis.call('LREM', pending, 0, id) > 0 then return true end
  if keyed and flow_unqueue(fready, v, id) then return true end
  if not leveled then return false end
  return redis.call('LREM', high, 0, id) > 0 or redis.call('LREM', low, 0, id) > 0
end
local state = 'pending'
if redis.call('ZREM', scheduled, id) == 1 then
  state = 'scheduled'
  if leveled then redis.call('HDEL', levels, id) end
  if keyed then redis.call('HDEL', flow, id) end
elseif not unqueue() then
  -- Not waiting: find the lease record that holds it (every batch in flight is looked at: the workers and their
  -- concurrency bound them).
  local needle = cjson.encode(id)
  for _, b in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    local raw = redis.call('HGET', batches, b .. ':ids')
    if raw and string.find(raw, needle, 1, true) then
      local ids, mask = cjson.decode(raw), record_of(batches, b)
      for pos = 1, #ids do
        if ids[pos] == id and mask and string.sub(mask, pos, pos) == '-' then
          if mode == 'delete' then return {3, 'active'} end
          redis.call('HSET', batches, b, string.sub(mask, 1, pos - 1) .. 'c' .. string.sub(mask, pos + 1))
          redis.call('INCRBY', inflight, -1)
          local fks = keyed and flow_keys_of(batches, b)
          if fks and flow_release(frun, fstate, frot, {fks[pos]}) then wake_one(KEYS[11]) end
          state = 'active'
          break
        end
      end
    end
    if state == 'active' then break end
  end
  if state ~= 'active' and redis.call('ZSCORE', active, id) then
    if mode == 'delete' then return {3, 'active'} end
    redis.call('ZREM', active, id)
    redis.call('HDEL', lease, id)
    state = 'active'
  end
end
redis.call('HDEL', deliveries, id)
-- A unique lock (unique.lua) needs nothing here: it is a claim that lock_holder checks against its task, so it is
-- free once the task's value is '~c' .. envelope or gone; the lock sweep drops the entry.
-- A per-key concurrency slot (flow.lua) is held by the delivery's lease: marking the position 'c' above ends the
-- lease's hold on it, and gives it back (flow_release). A keyed task that waits leaves its key's FIFO.
if mode == 'cancel' then
  redis.call('HSET', tasks, id, '~c' .. v)
  redis.call('ZADD', cancelled, now, id)
  if state == 'active' then redis.pcall('PUBLISH', cancelled .. ':notify', id) end
else
  redis.call('HDEL', tasks, id)
  redis.call('DEL', progress)
end
if gk then group_done(gk, gw, id, '3' .. ({cancel = 'cancelled', delete = 'deleted'})[mode]) end
return {1, state}
