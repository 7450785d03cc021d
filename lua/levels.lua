-- levels: priority levels (docs/flow-control.md). Functions of the prelude (see scripts.go), used only by a queue
-- that has seen a task of a level other than the default: the key levels (a HASH) exists from the first such task
-- on, and the scripts that make tasks runnable test it once per call (EXISTS) before touching any key below.
-- A level is one character: 'h' (PriorityHigh), 'n' (the default) or 'l' (PriorityLow). Each level has its list of
-- ready task ids, oldest at the head: 'h' the list high, 'n' the queue's own pending list, 'l' the list low.
-- levels holds the marker field '*' (the queue uses levels) and, for each task of level 'h' or 'l' that waits in
-- scheduled (delayed, or a retry with a delay) or dead, its level (id -> 'h' | 'l'): that is where a task keeps its
-- level while it is in no list. A leased batch keeps the levels of its tasks in its record, under base .. ':lv'
-- (one character per task, written only when one is not 'n'; level_at).

-- level_at(batches, base, pos): the level of the task at position pos (1-based) of the pickup batch whose first
-- token is base: 'n' unless its record holds levels.
local function level_at(batches, base, pos)
  local lv = redis.call('HGET', batches, base .. ':lv')
  if not lv then return 'n' end
  local c = string.sub(lv, pos, pos)
  if c == '' then return 'n' end
  return c
end

-- push_levels(high, pending, low, ids, lvs, head, reversed): push ids to the lists of their levels (lvs: one
-- character per id; nil means all 'n'): to the tails (RPUSH) in their order, or to the heads when head is true, so that each list's
-- head then reads them in their order; reversed says ids (and lvs) are given last first. One call per level used.
-- Returns whether a list went from empty to non-empty.
local function push_levels(high, pending, low, ids, lvs, head, reversed)
  local by = {h = {}, n = {}, l = {}}
  for i = 1, #ids do
    local c = lvs and string.sub(lvs, i, i) or 'n'
    if not by[c] then c = 'n' end
    local t = by[c]
    t[#t + 1] = ids[i]
  end
  local woke = false
  for _, c in ipairs({'h', 'n', 'l'}) do
    local t = by[c]
    if #t > 0 then
      local key = pending
      if c == 'h' then key = high end
      if c == 'l' then key = low end
      local len
      if head and reversed then
        len = redis.call('LPUSH', key, unpack(t))
      elseif head then
        local rev = {}
        for i = #t, 1, -1 do rev[#rev + 1] = t[i] end
        len = redis.call('LPUSH', key, unpack(rev))
      else
        len = redis.call('RPUSH', key, unpack(t))
      end
      if len == #t then woke = true end
    end
  end
  return woke
end

-- promote_levels(scheduled, levels, high, pending, low, now, limit): promote_due for a queue that uses levels: up to limit
-- scheduled tasks due by now go to the tails of their levels' lists, earliest first within a level, and leave
-- levels. Returns how many moved.
local function promote_levels(scheduled, levels, high, pending, low, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  redis.call('ZREM', scheduled, unpack(due))
  local lv = redis.call('HMGET', levels, unpack(due))
  local cs = {}
  for i = 1, #due do cs[i] = lv[i] or 'n' end
  push_levels(high, pending, low, due, table.concat(cs), false)
  redis.call('HDEL', levels, unpack(due))
  return #due
end

-- pop_levels(high, pending, low, n): take up to n ids from the heads of the ready lists, the highest level first (strict
-- priority, FIFO within a level). Returns the ids (false when none) and their levels, one character per id.
local function pop_levels(high, pending, low, n)
  local ids, cs = {}, {}
  for _, c in ipairs({'h', 'n', 'l'}) do
    local key = pending
    if c == 'h' then key = high end
    if c == 'l' then key = low end
    local got = redis.call('LPOP', key, n - #ids)
    if got then
      for i = 1, #got do
        ids[#ids + 1] = got[i]
        cs[#cs + 1] = c
      end
      if #ids >= n then break end
    end
  end
  if #ids == 0 then return false, '' end
  return ids, table.concat(cs)
end

-- park_level(levels, id, c): remember the level of a task that leaves the ready lists for scheduled or dead (only
-- a level other than 'n' is written).
local function park_level(levels, id, c)
  if c ~= 'n' then redis.call('HSET', levels, id, c) end
end
