-- unique_enqueue: enqueue.lua for a call with unique tasks (unique.go): the same idempotent enqueue by task id,
-- and before it, for a task with a unique key, the key's lock (lock_holder, unique.lua).
-- KEYS: tasks, pending, wake, scheduled, dead, locks.
-- ARGV[1] = number of tasks n; then per task i (0-based), six fields from ARGV[2+6i]: id, envelope, delay in ms
--           (0 = ready now), unique key ("" = none), TTL in ms, lifetime (one character, see unique.lua).
-- Returns one entry per task: what enqueue.lua returns (1 created; 0 the same envelope exists; 2 acked recently;
-- the existing envelope when it differs), or {4, holder}: the key is held by task holder, nothing stored; or
-- {3, holder}: debounce, holder was still scheduled: its envelope is replaced by this one (which must leave out
-- its task_id, as version 2 does) and it is due delay ms from now.
-- A created task with a key takes its lock: locks[key] = '<now + TTL>|<lifetime>|<id>'.
local tasks, pending, wake, scheduled, dead, locks = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local n = tonumber(ARGV[1])
local out = {}
if n == 0 then return out end
local now = now_ms()
local ready, delayed, fresh = {}, {}, {}
for i = 1, n do
  local o = 6 * i - 4
  local id, env, delay, key = ARGV[o], ARGV[o + 1], tonumber(ARGV[o + 2]), ARGV[o + 3]
  local ttl, life = tonumber(ARGV[o + 4]), ARGV[o + 5]
  local holder
  if key ~= '' then holder = lock_holder(locks, tasks, dead, key, now) end
  if holder and holder ~= id then
    if life == 'd' and (fresh[holder] or redis.call('ZSCORE', scheduled, holder)) then
      redis.call('HSET', tasks, holder, env)
      if fresh[holder] then
        delayed[fresh[holder]] = delay
      else
        redis.call('ZADD', scheduled, now + delay, holder)
      end
      redis.call('HSET', locks, key, string.format('%.0f', now + ttl) .. '|d|' .. holder)
      out[i] = {3, holder}
    else
      out[i] = {4, holder}
    end
  elseif redis.call('HSETNX', tasks, id, env) == 0 then
    local cur = redis.call('HGET', tasks, id)
    if cur == env then
      out[i] = 0
    elseif string.byte(cur, 1) == 126 then
      out[i] = 2
    else
      out[i] = cur
    end
  else
    if delay > 0 then
      delayed[#delayed + 1] = id
      delayed[#delayed + 1] = delay
      fresh[id] = #delayed
    else
      ready[#ready + 1] = id
    end
    if key ~= '' then
      redis.call('HSET', locks, key, string.format('%.0f', now + ttl) .. '|' .. life .. '|' .. id)
    end
    out[i] = 1
  end
end
place(pending, scheduled, wake, now, ready, delayed)
return out
