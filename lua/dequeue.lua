-- dequeue: promote due scheduled tasks, then lease up to n pending tasks as one batch. A constant number of Redis
-- calls per batch, whatever its size.
-- KEYS: the queue's key set (see keys.go), of which it uses tasks, pending, deliveries, scheduled, seq, wake,
-- paused, epoch, leases, batches and inflight, and levels, high and low (priority levels: levels.lua), and flow and
-- limits (only EXISTS).
-- ARGV[1] = n, the most tasks to lease; ARGV[2] = lease in ms; ARGV[3] = most scheduled tasks to promote.
-- Returns {now_ms, next_due_in_ms (-1: nothing scheduled), base, id1, deliveries1, envelope1, ...}: the tasks of
-- the batch in order, the i-th (1-based) holding the fencing token base + i - 1; deliveries counts this delivery
-- and the ones lost before it (deliveries holds the lost count). base is 0 when nothing was leased.
-- One lease for the whole batch: leases scores base by the deadline, and batches holds its record: under base a
-- mask of one '-' (leased) per task, under base .. ':ids' the JSON array of the ids (record_of, prelude.lua). inflight counts the
-- tasks leased. A task whose value in tasks is missing or a tombstone ('~': acked) is dropped from pending, not
-- leased.
-- Wakes one more consumer when it took a full batch and tasks remain.
-- A suspect (a task whose lease expired before: it may crash its worker) is leased alone: the batch is cut
-- before the first suspect, or right after it when it comes first, and the rest goes back to the head. A worker
-- that crashes running a suspect then takes no batch-mates down with it.
-- While pickup is paused (paused exists) it still promotes due scheduled tasks but leases nothing and returns
-- {now_ms, -1, 0}: a paused consumer blocks on the wake list until Resume pushes a wake-up (or its wait ends),
-- rather than waking up for each delayed task that falls due.
-- A queue that uses priority levels (levels exists) takes the highest level first and keeps the levels of its
-- batch in its record (levels.lua). One EXISTS tells both whether pickup is paused and whether levels are in use:
-- a queue that is neither pays nothing more (a second EXISTS tells them apart when one of them is).
-- A queue that uses flow keys or limits (flow or limits exists: flow.lua) is served by dequeue_flow.lua: the same
-- EXISTS sees them, and this script then returns {0, -2, 0} at once, having written nothing, which tells the
-- caller to call dequeue_flow.lua instead (from then on). A queue that uses neither pays two more keys in that
-- EXISTS and never defines the functions of flow.lua.
local tasks, pending, deliveries, scheduled = KEYS[1], KEYS[2], KEYS[5], KEYS[6]
local seq, wake, paused, epoch = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local leases, batches, inflight = KEYS[14], KEYS[15], KEYS[16]
local levels, high, low = KEYS[18], KEYS[19], KEYS[20]
local flow, limits = KEYS[21], KEYS[27]
local gate = redis.call('EXISTS', paused, levels, flow, limits)
if gate > 0 and redis.call('EXISTS', flow, limits) > 0 then return {0, -2, 0} end
local lv = gate > 0 and redis.call('EXISTS', levels) == 1
if lv then gate = gate - 1 end
local n, lease_ms, promote = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
if lv then promote_levels(scheduled, levels, high, pending, low, now, promote) else promote_due(scheduled, pending, now, promote) end
local out = {now, -1, 0}
if gate > 0 then return out end
local ids, lvs
if lv then ids, lvs = pop_levels(high, pending, low, n) else ids = redis.call('LPOP', pending, n) end
if ids then
  local full = #ids == n
  -- deliveries holds only tasks whose lease expired: usually it does not exist, and reading it per task would
  -- cost more than the rest of the pickup.
  local lost = {}
  if redis.call('EXISTS', deliveries) == 1 then lost = redis.call('HMGET', deliveries, unpack(ids)) end
  for i = 1, #ids do
    if lost[i] then
      local cut = (i == 1) and 1 or i - 1
      if cut < #ids then
        local back = {}
        for j = #ids, cut + 1, -1 do
          back[#back + 1] = ids[j]
          ids[j] = nil
        end
        if lv then
          push_levels(high, pending, low, back, string.reverse(string.sub(lvs, cut + 1)), true, true)
          lvs = string.sub(lvs, 1, cut)
        else
          redis.call('LPUSH', pending, unpack(back))
        end
        full = true
      end
      break
    end
  end
  local envs = redis.call('HMGET', tasks, unpack(ids))
  local live, o, cs = {}, 3, {}
  for i = 1, #ids do
    local env = envs[i]
    if env and string.byte(env, 1) ~= 126 then
      live[#live + 1] = ids[i]
      if lv then cs[#cs + 1] = string.sub(lvs, i, i) end
      out[o + 1] = ids[i]
      out[o + 2] = (tonumber(lost[i]) or 0) + 1
      out[o + 3] = env
      o = o + 3
    end
  end
  if #live > 0 then
    -- Tokens are epoch + seq. A missing epoch (a new queue, or a Redis restarted empty) is set from the server
    -- clock x 256, so tokens never repeat one handed out before a restart (unless deliveries averaged more than
    -- 256 per ms), and seq stays a plain count of deliveries.
    local e = redis.call('GET', epoch)
    if not e then
      e = string.format('%.0f', now * 256)
      redis.call('SET', epoch, e)
    end
    local base = tonumber(e) + redis.call('INCRBY', seq, #live) - #live + 1
    local b = string.format('%.0f', base)
    redis.call('ZADD', leases, now + lease_ms, b)
    redis.call('HSET', batches, b, string.rep('-', #live), b .. ':ids', cjson.encode(live))
    redis.call('INCRBY', inflight, #live)
    cs = table.concat(cs)
    if string.find(cs, '[hl]') then redis.call('HSET', batches, b .. ':lv', cs) end
    out[3] = base
  end
  if full and (redis.call('LLEN', pending) > 0 or lv and redis.call('LLEN', high) + redis.call('LLEN', low) > 0) then
    wake_one(wake)
  end
end
local head = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
if head[2] then
  local wait = tonumber(head[2]) - now
  if wait < 0 then wait = 0 end
  out[2] = wait
end
return out
