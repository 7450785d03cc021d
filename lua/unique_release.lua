-- unique_release: delete lock records of unique tasks (unique.lua) that no longer hold anything. Only tasks that
-- carry a lock make the worker call it (after their pickup, ack or dead letter), and a sweep.
-- KEYS: tasks, dead, locks.
-- ARGV[1] = mode: "leave" (tasks that left the queue, or were dead-lettered), "start" (tasks just leased),
--           "force" (an operator's release: the record goes whatever it says), then pairs key, task id ("" with
--           force: any holder); or "sweep", ARGV[2] = HSCAN cursor, ARGV[3] = COUNT: deletes the free records
--           among those scanned; or "inspect", then keys: reads them (writes nothing).
-- Returns the number of records deleted; for sweep {next cursor, deleted}; for inspect, per key its record (nil
-- when none) and 1 when the lock is held (lock_holder), else 0.
local tasks, dead, locks = KEYS[1], KEYS[2], KEYS[3]
local mode = ARGV[1]
local now = now_ms()
local n = 0
if mode == 'inspect' then
  -- ARGV[2..] = keys: per key its record (nil when none) and 1 when it is held, else 0.
  local out = {}
  for i = 2, #ARGV do
    out[#out + 1] = redis.call('HGET', locks, ARGV[i])
    if lock_holder(locks, tasks, dead, ARGV[i], now) then out[#out + 1] = 1 else out[#out + 1] = 0 end
  end
  return out
end
if mode == 'sweep' then
  local r = redis.call('HSCAN', locks, ARGV[2], 'COUNT', tonumber(ARGV[3]))
  local kv, gone = r[2], {}
  for i = 1, #kv, 2 do
    if not lock_holder(locks, tasks, dead, kv[i], now) then gone[#gone + 1] = kv[i] end
  end
  if #gone > 0 then redis.call('HDEL', locks, unpack(gone)) end
  return {r[1], #gone}
end
for i = 2, #ARGV, 2 do
  local key, id = ARGV[i], ARGV[i + 1]
  if mode == 'force' then
    local rec = redis.call('HGET', locks, key)
    if rec then
      local _, _, holder = lock_parse(rec)
      if id == '' or holder == id then n = n + redis.call('HDEL', locks, key) end
    end
  else
    n = n + unique_release(locks, tasks, dead, key, id, now, mode == 'start')
  end
end
return n
