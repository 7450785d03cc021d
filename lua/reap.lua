-- reap: return deliveries whose lease expired, and promote due scheduled tasks. Bounded per call; safe to run
-- from any number of processes at once (each expired batch is taken out of leases exactly once).
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, active, lease, deliveries, scheduled,
-- dead, errors, settled, wake, leases, batches, inflight, window, levels, high and low, then the group run keys that the claims name
-- (hash, done list).
-- ARGV[1] = most leased tasks to reap (a batch is reaped in part when it does not fit); ARGV[2] = max deliveries (a task whose lease expired this many deliveries in a
--           row is dead-lettered; deliveries counts the expired ones); ARGV[3] = most scheduled tasks to promote;
--           ARGV[4] = reason prefix for dead letters; ARGV[5] = settled window (as ack.lua's);
--           ARGV[6..] = claims: quads base, position, id, KEYS index of its group run hash (0 = none); base ""
--           names a delivery of the previous layout (below).
-- An expired batch (leases, batches: dequeue.lua) gives each task still leased in it ('-' in its mask) back to
-- the head of pending, in batch order (the earliest expired batch first), with its count in deliveries + 1, or
-- dead-letters it when that count reaches max deliveries; then the record goes. A record whose deliveries all settled (kept for resends:
-- settle.lua) just goes.
-- A task due for the dead letters whose envelope may name a group run ('"group_id":"…@') is held: left as it is
-- and returned with its envelope, since its group's keys were not passed. The caller calls again with it as a
-- claim and its group's keys: if its lease is still expired, that call dead-letters it and completes its group
-- as failed (group_done, group.lua), in one script.
-- The previous layout: deliveries leased before an upgrade (a member per task in active, its token in lease) are
-- reaped the same way once expired, and entries of the previous settled window (settled, score token*4 +
-- outcome) become tombstones (an ack's: '~' .. token, appended to window) or are dropped (other outcomes), up to
-- ARGV[1] per call. See docs/migration.md.
-- A task keeps its priority level (levels.lua): a reclaimed one goes back to the head of its level's list, a
-- dead-lettered one keeps its level in levels.
-- A keyed task (flow.lua) gives back its key's slot when its lease is reaped: a reclaimed one goes back to the
-- head of its key's FIFO, a dead-lettered one keeps its key in flow. Keys whose rate lets them start again rejoin
-- the rotation.
-- Returns {requeued, dead, promoted, held id1, envelope1, base1, position1, ...}.
local tasks, pending, active, lease, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local scheduled, dead, errors, settled, wake = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[11]
local leases, batches, inflight, recent = KEYS[14], KEYS[15], KEYS[16], KEYS[17]
local limit, maxd, promote, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local lv = redis.call('EXISTS', levels) == 1
local flow, fready, rot, state, waits, running = KEYS[21], KEYS[22], KEYS[23], KEYS[24], KEYS[25], KEYS[26]
local fl = redis.call('EXISTS', flow, KEYS[27]) > 0
local fwoke = false
local now = now_ms()
local was_empty = redis.call('LLEN', pending) == 0
local requeued, buried, settled_now = 0, 0, 0
local function bury(id, d)
  redis.call('HDEL', deliveries, id)
  redis.call('ZADD', dead, now, id)
  local why = ARGV[4] .. ' (' .. d .. ' deliveries, each lease expired)'
  redis.call('HSET', errors, id, why)
  buried = buried + 1
  return why
end
local function lost_count(id)
  return tonumber(redis.call('HGET', deliveries, id) or '0') + 1
end

-- Claims: held members of group runs, dead-lettered with their group's keys.
for i = 6, #ARGV, 4 do
  local b, pos, id, g = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  local d = lost_count(id)
  local why
  if b == '' then
    local score = tonumber(redis.call('ZSCORE', active, id))
    if score and score <= now and d >= maxd and redis.call('HEXISTS', tasks, id) == 1 then
      redis.call('ZREM', active, id)
      redis.call('HDEL', lease, id)
      why = bury(id, d)
    end
  else
    local score = tonumber(redis.call('ZSCORE', leases, b))
    local mask = record_of(batches, b)
    if score and score <= now and mask and string.sub(mask, pos, pos) == '-' and ids_of(batches, b)[pos] == id
        and d >= maxd and redis.call('HEXISTS', tasks, id) == 1 then
      redis.call('HSET', batches, b, string.sub(mask, 1, pos - 1) .. 'x' .. string.sub(mask, pos + 1))
      settled_now = settled_now + 1
      why = bury(id, d)
      if lv then park_level(levels, id, level_at(batches, b, pos)) end
    end
  end
  if why and g > 0 then group_done(KEYS[g], KEYS[g + 1], id, '0' .. why) end
end

local promoted
if fl then
  promoted, fwoke = flow_promote(scheduled, flow, fready, rot, state, levels, high, pending, low, now, promote, lv)
  if flow_promote_waits(waits, state, rot, now) > 0 then fwoke = true end
elseif lv then
  promoted = promote_levels(scheduled, levels, high, pending, low, now, promote)
else
  promoted = promote_due(scheduled, pending, now, promote)
end
local held = {}
-- give_back handles one leased task whose lease expired: back to pending (collected in back, in order, pushed
-- to the head below), dead-lettered, or dropped when its envelope is gone; false when it is held (left leased).
local back, back_lv, cur_lv = {}, {}, nil
local kback, kback_fk, freed, cur_fk = {}, {}, {}, nil
local function give_back(id, b, pos)
  local c = cur_lv and string.sub(cur_lv, pos, pos) or 'n'
  local fk = cur_fk and cur_fk[pos] ~= '' and cur_fk[pos]
  local d = lost_count(id)
  if redis.call('HEXISTS', tasks, id) == 0 then
    redis.call('HDEL', deliveries, id)
  elseif d >= maxd then
    local env = redis.call('HGET', tasks, id)
    if string.find(env, '"group_id":"[^"]*@') then
      held[#held + 1] = id
      held[#held + 1] = env
      held[#held + 1] = b
      held[#held + 1] = pos
      return false
    end
    bury(id, d)
    if fk then
      redis.call('HSET', flow, id, fk)
    elseif lv then
      park_level(levels, id, c)
    end
  else
    redis.call('HSET', deliveries, id, d)
    if fk then
      kback[#kback + 1] = id
      kback_fk[#kback] = fk
    else
      back[#back + 1] = id
      back_lv[#back] = c
    end
  end
  if fk then freed[#freed + 1] = fk end -- its lease ended here: its slot with it
  return true
end

-- Expired batches, the earliest deadline first, each in batch order, up to limit tasks in all: a batch that does
-- not fit keeps the rest of its tasks leased (and expired) for the next call.
local budget = limit
local bs = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
for _, b in ipairs(bs) do
  if budget <= 0 then break end
  local mask = record_of(batches, b)
  local keep = false
  if mask and string.find(mask, '-', 1, true) then
    local ids = ids_of(batches, b)
    cur_lv = lv and redis.call('HGET', batches, b .. ':lv')
    cur_fk = fl and flow_keys_of(batches, b)
    local marks = {string.byte(mask, 1, -1)}
    for pos = 1, #ids do
      if marks[pos] == 45 then -- '-'
        if budget <= 0 then
          keep = true
        else
          budget = budget - 1
          if give_back(ids[pos], b, pos) then
            marks[pos] = 120 -- 'x'
            settled_now = settled_now + 1
          else
            keep = true
          end
        end
      end
    end
    if keep then redis.call('HSET', batches, b, string.char(unpack(marks))) end
  end
  if not keep then
    redis.call('HDEL', batches, b, b .. ':ids', b .. ':lv', b .. ':k')
    redis.call('ZREM', leases, b)
  end
end
if settled_now > 0 then redis.call('INCRBY', inflight, -settled_now) end

-- The previous layout's leases, within what is left of limit.
cur_lv, cur_fk = nil, nil
if budget > 0 then
  local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, budget)
  for _, id in ipairs(ids) do
    if give_back(id, '', 0) then
      redis.call('ZREM', active, id)
      redis.call('HDEL', lease, id)
    end
  end
end

-- Reclaimed tasks go back to the head of pending, the earliest expired first.
if #back > 0 then
  local rev = {}
  for i = #back, 1, -1 do rev[#rev + 1] = back[i] end
  if lv then
    push_levels(high, pending, low, rev, string.reverse(table.concat(back_lv)), true, true)
  else
    redis.call('LPUSH', pending, unpack(rev))
  end
  requeued = #back
end
if #freed > 0 and flow_release(running, state, rot, freed) then fwoke = true end
if #kback > 0 then
  if flow_push_keyed(flow, fready, rot, state, kback, kback_fk, true) then fwoke = true end
  requeued = requeued + #kback
end

-- The previous layout's settled window.
local old = redis.call('ZRANGE', settled, 0, limit - 1, 'WITHSCORES')
if #old > 0 then
  local gone, acked = {}, {}
  for i = #old - 1, 1, -2 do
    local id, score = old[i], tonumber(old[i + 1])
    gone[#gone + 1] = id
    if window > 0 and score % 4 == 0 and redis.call('HSETNX', tasks, id, '~' .. string.format('%.0f', score / 4)) == 1 then
      acked[#acked + 1] = id
    end
  end
  redis.call('ZREM', settled, unpack(gone))
  if #acked > 0 then redis.call('LPUSH', recent, unpack(acked)) end
end

if (was_empty or lv) and (requeued > 0 or promoted > 0) or fwoke then
  wake_one(wake)
end
local out = {requeued, buried, promoted}
for _, v in ipairs(held) do out[#out + 1] = v end
return out
