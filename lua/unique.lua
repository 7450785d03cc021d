-- unique: the lock records of unique tasks (unique.go, docs/unique.md), shared like the prelude (withPrelude,
-- scripts.go). locks is the queue's HASH unique key -> record '<expiry ms>|<lifetime>|<holder task id>', the
-- lifetime one character: 'l' until the task leaves the queue (succeeded or dead), 's' until it succeeds, 'b'
-- until it starts, 't' throttle (the TTL alone), 'd' debounce. A record is a claim, not the truth: lock_holder
-- reads the holder task's own state, so a record whose task is gone (completed, purged, deleted, lost in a restart)
-- is free, and no path out of the queue can strand a lock. Records are deleted by unique_release (the task's exit
-- paths) and unique_sweep (a bounded scan): that only frees memory.

-- lock_parse(rec): expiry (ms), lifetime and holder id of a lock record; nil for a malformed one (free).
local function lock_parse(rec)
  local exp, life, id = string.match(rec, '^(%d+)|(%a)|(.+)$')
  if not exp then return nil end
  return tonumber(exp), life, id
end

-- lock_holder(locks, tasks, dead, key, now): the id of the task that holds the unique key at server time now, or
-- nil when the key is free: no record, its TTL passed, or (but for throttle) its holder is no task any more (no
-- envelope, or a tombstone: acked) or, but for lifetime 's', is a dead letter.
local function lock_holder(locks, tasks, dead, key, now)
  local rec = redis.call('HGET', locks, key)
  if not rec then return nil end
  local exp, life, id = lock_parse(rec)
  if not exp or exp <= now then return nil end
  if life == 't' then return id end
  local env = redis.call('HGET', tasks, id)
  if not env or string.byte(env, 1) == 126 then return nil end
  if life ~= 's' and redis.call('ZSCORE', dead, id) then return nil end
  return id
end

-- unique_release(locks, tasks, dead, key, id, now, started): release task id's lock on key as the task leaves
-- the queue (started false: deleted when id holds the record and lock_holder no longer names it) or starts
-- (started true: deleted when id holds it with lifetime 'b'). The one helper for every path out of the queue
-- (ack, dead letter, purge, delete, cancellation): call it after the task's own keys changed. Returns 1 when it
-- deleted the record, else 0.
local function unique_release(locks, tasks, dead, key, id, now, started)
  local rec = redis.call('HGET', locks, key)
  if not rec then return 0 end
  local exp, life, holder = lock_parse(rec)
  if exp then
    if holder ~= id then return 0 end
    if started then
      if life ~= 'b' then return 0 end
    elseif lock_holder(locks, tasks, dead, key, now) then
      return 0
    end
  end
  redis.call('HDEL', locks, key)
  return 1
end
