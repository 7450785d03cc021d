-- flow: flow keys, fairness across them, per-key concurrency and rate limits (docs/flow-control.md). Functions of
-- the prelude (see scripts.go), used only by a queue that has seen a keyed task (the key flow, a HASH, exists from
-- its first one on) or has a limit set (the key limits exists): the scripts that make tasks runnable or take them
-- test that once per call (EXISTS) before touching any key below.
-- A flow key is 1 to 64 characters of [A-Za-z0-9_.:/@+=-] (flow.go): never a space, '!' or '*', so that:
--   ready (a ZSET, every score 0) holds each ready keyed task as "<key> <seq><id>", seq 15 digits (a counter from
--   5e14 up for the tails, down from a key's head for releases and reclaims: 15 digits for 4e14 of each): lex order is
--   FIFO within a key, and the key's tasks are the range '[<key> ' .. '(<key>!' (flow_range);
--   '*' names the default of all keys in limits and the queue itself in rate.
-- A flow key with ready tasks has one state in state: 'r' (it is in the rotation list rot, once), 'f' (at its
-- concurrency limit: out of the rotation until a slot frees, flow_release) or 'w' (over its rate: in waits, scored
-- by when it may start again, until pickup promotes it, flow_promote_waits). A key whose tasks run out leaves state
-- at its next visit.
-- running counts each key's leased tasks: its slots. A slot is taken by the pickup that leases the task and given
-- back by the script that ends its lease (ack, settle, reap, cancel), each reading the task's key from its batch's
-- record (under base .. ':k', a JSON array of one key per position, "" for a task without one; flow_keys_of), so
-- a crashed worker's slots come back with its lease.
-- flow holds the marker '*', the counter '#' of seq, and for a keyed task waiting in scheduled or dead its key.

-- flow_keys_of(batches, base): the flow keys of the positions of the pickup batch whose first token is base (a
-- table; "" for a task without a key), or nil when its record holds none.
local function flow_keys_of(batches, base)
  local raw = redis.call('HGET', batches, base .. ':k')
  if not raw then return nil end
  return cjson.decode(raw)
end

-- flow_push(flow, ready, rot, state, fk, ids, head): put ids, in their order, at the tail of flow key fk's FIFO
-- (or at its head when head is true: a released or reclaimed task). A key without a state joins the rotation.
-- Returns true when it did (the caller wakes a consumer).
local function flow_push(flow, fready, rot, fstate, fk, ids, head)
  local sq
  if head then
    local h = redis.call('ZRANGEBYLEX', fready, '[' .. fk .. ' ', '(' .. fk .. '!', 'LIMIT', 0, 1)
    if h[1] then sq = tonumber(string.sub(h[1], #fk + 2, #fk + 16)) - #ids end
  end
  if not sq then sq = 5e14 + redis.call('HINCRBY', flow, '#', #ids) - #ids + 1 end
  local args = {}
  for i = 1, #ids do
    args[#args + 1] = 0
    args[#args + 1] = fk .. ' ' .. string.format('%d', sq + i - 1) .. ids[i]
  end
  redis.call('ZADD', fready, unpack(args))
  if redis.call('HSETNX', fstate, fk, 'r') == 1 then
    redis.call('RPUSH', rot, fk)
    return true
  end
  return false
end

-- flow_push_keyed(flow, ready, rot, state, ids, fks, head): flow_push for ids whose keys are fks (one per id, in
-- order). At the tails, a constant number of calls whatever the keys: one counter increment, one ZADD, and for
-- the keys one HMGET of their states, one HSET and one RPUSH of those that join the rotation. At the heads
-- (rare: releases, reclaims), flow_push per key. Returns true when a key joined the rotation.
local function flow_push_keyed(flow, fready, rot, fstate, ids, fks, head)
  local by, order = {}, {}
  for i = 1, #ids do
    local fk = fks[i]
    if not by[fk] then
      by[fk] = {}
      order[#order + 1] = fk
    end
    local t = by[fk]
    t[#t + 1] = ids[i]
  end
  if head then
    local joined = false
    for _, fk in ipairs(order) do
      if flow_push(flow, fready, rot, fstate, fk, by[fk], head) then joined = true end
    end
    return joined
  end
  local sq = 5e14 + redis.call('HINCRBY', flow, '#', #ids) - #ids + 1
  local args = {}
  for i = 1, #ids do
    args[#args + 1] = 0
    args[#args + 1] = fks[i] .. ' ' .. string.format('%d', sq + i - 1) .. ids[i]
  end
  redis.call('ZADD', fready, unpack(args))
  local st = redis.call('HMGET', fstate, unpack(order))
  local join, hs = {}, {}
  for i, fk in ipairs(order) do
    if not st[i] then
      join[#join + 1] = fk
      hs[#hs + 1] = fk
      hs[#hs + 1] = 'r'
    end
  end
  if #join == 0 then return false end
  redis.call('HSET', fstate, unpack(hs))
  redis.call('RPUSH', rot, unpack(join))
  return true
end

-- flow_release(running, state, rot, fks): give back one slot of each flow key in fks (a key may repeat; "" is
-- skipped), in a constant number of calls. A key that was at its limit with ready tasks ('f') goes back to the
-- tail of the rotation. Returns true when one did (the caller wakes a consumer).
local function flow_release(running, fstate, rot, fks)
  local n, order = {}, {}
  for _, fk in ipairs(fks) do
    if fk ~= '' then
      if not n[fk] then
        n[fk] = 0
        order[#order + 1] = fk
      end
      n[fk] = n[fk] + 1
    end
  end
  if #order == 0 then return false end
  local run = redis.call('HMGET', running, unpack(order))
  local st = redis.call('HMGET', fstate, unpack(order))
  local set, del, back, hs = {}, {}, {}, {}
  for i, fk in ipairs(order) do
    local left = (tonumber(run[i]) or 0) - n[fk]
    if left > 0 then
      set[#set + 1] = fk
      set[#set + 1] = left
    else
      del[#del + 1] = fk
    end
    if st[i] == 'f' then
      back[#back + 1] = fk
      hs[#hs + 1] = fk
      hs[#hs + 1] = 'r'
    end
  end
  if #set > 0 then redis.call('HSET', running, unpack(set)) end
  if #del > 0 then redis.call('HDEL', running, unpack(del)) end
  if #back == 0 then return false end
  redis.call('HSET', fstate, unpack(hs))
  redis.call('RPUSH', rot, unpack(back))
  return true
end

-- flow_promote_waits(waits, state, rot, now): keys whose rate lets them start again by now rejoin the rotation.
-- Returns how many did.
local function flow_promote_waits(waits, fstate, rot, now)
  local due = redis.call('ZRANGEBYSCORE', waits, '-inf', now, 'LIMIT', 0, 1000)
  if #due == 0 then return 0 end
  redis.call('ZREM', waits, unpack(due))
  for _, fk in ipairs(due) do redis.call('HSET', fstate, fk, 'r') end
  redis.call('RPUSH', rot, unpack(due))
  return #due
end

-- flow_promote(scheduled, flow, ready, rot, state, levels, high, pending, low, now, limit, lv): promote_due for a
-- queue that uses flow keys: up to limit scheduled tasks due by now, earliest first, go to the tails of their
-- keys' FIFOs, or of their levels' lists (lv: the queue uses levels), and leave flow (and levels). Returns how many
-- moved and whether a list went from empty to non-empty or a key joined the rotation.
local function flow_promote(scheduled, flow, fready, rot, fstate, levels, high, pending, low, now, limit, lv)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0, false end
  redis.call('ZREM', scheduled, unpack(due))
  local fk = redis.call('HMGET', flow, unpack(due))
  local kids, kfks, plain = {}, {}, {}
  for i = 1, #due do
    if fk[i] then
      kids[#kids + 1] = due[i]
      kfks[#kfks + 1] = fk[i]
    else
      plain[#plain + 1] = due[i]
    end
  end
  local woke = false
  if #kids > 0 then
    woke = flow_push_keyed(flow, fready, rot, fstate, kids, kfks, false)
    redis.call('HDEL', flow, unpack(kids))
  end
  if #plain > 0 then
    if lv then
      local l = redis.call('HMGET', levels, unpack(plain))
      local cs = {}
      for i = 1, #plain do cs[i] = l[i] or 'n' end
      if push_levels(high, pending, low, plain, table.concat(cs), false) then woke = true end
      redis.call('HDEL', levels, unpack(plain))
    elseif redis.call('RPUSH', pending, unpack(plain)) == #plain then
      woke = true
    end
  end
  return #due, woke
end

-- flow_rate(spec): a rate limit "<n>/<period ms>" as n and the period, or nil.
local function flow_rate(spec)
  if not spec then return nil end
  local n, p = string.match(spec, '^(%d+)/(%d+)$')
  if not n then return nil end
  return tonumber(n), tonumber(p)
end

-- flow_allow(rate, member, n, period, now): the rate limiter of member (a flow key, or '*' for the queue): a GCRA
-- (a token bucket of n starts refilled at n per period, so a burst of n), its state the theoretical arrival time
-- tat (score of member in rate, ms). Returns how many starts it allows now (0 to n), the tat they start from, the
-- emission interval (period / n) and, when it allows none, when it allows one again.
local function flow_allow(rate, member, n, period, now)
  local t = period / n
  local tat = tonumber(redis.call('ZSCORE', rate, member)) or now
  if tat < now then tat = now end
  local k = math.floor((period - (tat - now)) / t + 1e-9)
  if k > n then k = n end
  if k <= 0 then return 0, tat, t, tat + t - period end
  return k, tat, t, nil
end

-- flow_take(ready, rot, state, waits, running, limits, rate, room, share, now, lm, dflt, took, ids, fks, cs):
-- one turn of the rotation: takes the keys at its head (as many as room / share) and from each up to share tasks, as
-- its limits allow (lm: the queue has limits; dflt: the default limits, {c, rate spec}), appending the ids, their
-- keys and level 'n' to ids, fks and cs, and counting per key in took. Each key visited goes back to the tail
-- (it may give more), to 'f' (at its concurrency limit), to waits (over its rate), or out of state (its tasks ran
-- out). The calls it makes per key visited: one ZRANGEBYLEX; the rest is per turn (the limits and slots of all
-- its keys in one HMGET each, the tasks taken out of ready in one ZREM). Returns how many tasks it took.
local function flow_take(fready, rot, fstate, waits, running, limits, rate, room, share, now, lm, dflt, took, ids, fks, cs)
  local nk = redis.call('LLEN', rot)
  if nk == 0 or room <= 0 then return 0 end
  -- As many keys as the room needs if each gives its share (a key that gives less leaves room for the next turn).
  local keys = redis.call('LPOP', rot, math.min(nk, math.ceil(room / share)))
  local lims, runs = {}, {}
  if lm then
    local f = {}
    for i, fk in ipairs(keys) do
      f[2 * i - 1] = 'c:' .. fk
      f[2 * i] = 'r:' .. fk
    end
    lims = redis.call('HMGET', limits, unpack(f))
    runs = redis.call('HMGET', running, unpack(keys))
  end
  local again, gone, total = {}, {}, 0
  for i, fk in ipairs(keys) do
    if room <= 0 then
      -- No room left for the rest of this turn: they go back to the head, in order.
      local rest = {}
      for j = #keys, i, -1 do rest[#rest + 1] = keys[j] end
      redis.call('LPUSH', rot, unpack(rest))
      break
    end
    local a = math.min(share, room)
    local lim, rn, rp, tat, t, nextok
    if lm then
      lim = tonumber(lims[2 * i - 1] or dflt[1])
      rn, rp = flow_rate(lims[2 * i] or dflt[2])
      if lim then a = math.min(a, lim - (tonumber(runs[i]) or 0) - (took[fk] or 0)) end
      if rn and a > 0 then
        local k
        k, tat, t, nextok = flow_allow(rate, fk, rn, rp, now)
        a = math.min(a, k)
      end
    end
    local got = {}
    if a > 0 then got = redis.call('ZRANGEBYLEX', fready, '[' .. fk .. ' ', '(' .. fk .. '!', 'LIMIT', 0, a) end
    if a > 0 and #got == 0 then
      redis.call('HDEL', fstate, fk)
    elseif a <= 0 then
      if nextok then
        redis.call('HSET', fstate, fk, 'w')
        redis.call('ZADD', waits, nextok, fk)
      else
        redis.call('HSET', fstate, fk, 'f')
      end
    else
      local skip = #fk + 17
      for j = 1, #got do
        gone[#gone + 1] = got[j]
        ids[#ids + 1] = string.sub(got[j], skip)
        fks[#fks + 1] = fk
        cs[#cs + 1] = 'n'
      end
      took[fk] = (took[fk] or 0) + #got
      room = room - #got
      total = total + #got
      if rn then redis.call('ZADD', rate, tat + #got * t, fk) end
      if #got < a then
        redis.call('HDEL', fstate, fk)
      else
        again[#again + 1] = fk
      end
    end
  end
  if #gone > 0 then redis.call('ZREM', fready, unpack(gone)) end
  if #again > 0 then redis.call('RPUSH', rot, unpack(again)) end
  return total
end

-- pop_flow(high, pending, low, ready, rot, state, waits, running, limits, rate, n, now, lv, lm): take up to n
-- ready tasks for a queue that uses flow keys or limits: every ready task of level high first (lv: the queue uses
-- levels), then turns of the rotation in which the queue's default list (tasks without a key) counts as one more
-- key, each member taking an equal share of what room is left, but at least 8 (a key visited costs a call: taking
-- one task per visit would double the pickup's cost with 100 keys), then level low. With limits (lm), the
-- queue's own rate caps the whole batch and each key's limits cap its share. Returns the ids (false when none),
-- their levels (one character each), their flow keys ("" for none), and when the queue's rate allows a start
-- again (nil unless its tokens ran out).
local function pop_flow(high, pending, low, fready, rot, fstate, waits, running, limits, rate, n, now, lv, lm)
  local ids, fks, cs, took = {}, {}, {}, {}
  local room, qnext, dflt = n, nil, {}
  local qn, qp, qtat, qt
  if lm then
    -- A limiter whose tat has passed is as good as none: drop those, so that rate holds only keys limited now.
    redis.call('ZREMRANGEBYSCORE', rate, '-inf', now)
    local d = redis.call('HMGET', limits, 'c:*', 'r:*', 'q')
    dflt = {d[1], d[2]}
    qn, qp = flow_rate(d[3])
    if qn then
      local k
      k, qtat, qt, qnext = flow_allow(rate, '*', qn, qp, now)
      room = math.min(room, k)
    end
  end
  local function add(got, c)
    for i = 1, #got do
      ids[#ids + 1] = got[i]
      fks[#fks + 1] = ''
      cs[#cs + 1] = c
    end
    room = room - #got
  end
  if room > 0 and lv then
    local got = redis.call('LPOP', high, room)
    if got then add(got, 'h') end
  end
  for _ = 1, n do
    if room <= 0 then break end
    local members = redis.call('LLEN', rot)
    local pl = redis.call('LLEN', pending)
    if pl > 0 then members = members + 1 end
    if members == 0 then break end
    local share = math.max(math.ceil(room / members), 8)
    local before = room
    if pl > 0 then
      local got = redis.call('LPOP', pending, math.min(share, room))
      if got then add(got, 'n') end
    end
    room = room - flow_take(fready, rot, fstate, waits, running, limits, rate, room, share, now, lm, dflt, took, ids, fks, cs)
    if room == before then break end
  end
  if room > 0 and lv then
    local got = redis.call('LPOP', low, room)
    if got then add(got, 'l') end
  end
  if qn and #ids > 0 then
    redis.call('ZADD', rate, qtat + #ids * qt, '*')
    -- Every token used: the next one is due at the new tat + interval - period.
    if #ids < n and room <= 0 then qnext = qtat + (#ids + 1) * qt - qp end
  end
  if #ids == 0 then return false, '', fks, qnext end
  return ids, table.concat(cs), fks, qnext
end

-- flow_push_back(flow, ready, rot, state, high, pending, low, back, lvs, fks, cut): give back the tasks a pickup
-- cut off its batch (before a suspect): back holds the ids of positions #back + cut down to cut + 1 (last first),
-- lvs and fks the levels and keys of every position. Each goes back to the head of its key's FIFO or its level's
-- list, in its order.
local function flow_push_back(flow, fready, rot, fstate, high, pending, low, back, lvs, fks, cut)
  local pids, pcs, kids, kfks = {}, {}, {}, {}
  for j = #back, 1, -1 do
    local pos = cut + #back - j + 1
    if fks[pos] ~= '' then
      kids[#kids + 1] = back[j]
      kfks[#kfks + 1] = fks[pos]
    else
      pids[#pids + 1] = back[j]
      pcs[#pcs + 1] = string.sub(lvs, pos, pos)
    end
  end
  if #pids > 0 then push_levels(high, pending, low, pids, table.concat(pcs), true, false) end
  if #kids > 0 then flow_push_keyed(flow, fready, rot, fstate, kids, kfks, true) end
end

-- flow_take_slots(running, batches, base, lk): a pickup batch whose first token is base leased keyed tasks: keep
-- the keys of its positions (lk, "" for a task without one) in its record and take a slot of each key (one HMGET
-- and one HSET for all its keys).
local function flow_take_slots(running, batches, base, lk)
  redis.call('HSET', batches, base .. ':k', cjson.encode(lk))
  local n, order = {}, {}
  for _, fk in ipairs(lk) do
    if fk ~= '' then
      if not n[fk] then
        n[fk] = 0
        order[#order + 1] = fk
      end
      n[fk] = n[fk] + 1
    end
  end
  local run = redis.call('HMGET', running, unpack(order))
  local set = {}
  for i, fk in ipairs(order) do
    set[#set + 1] = fk
    set[#set + 1] = (tonumber(run[i]) or 0) + n[fk]
  end
  redis.call('HSET', running, unpack(set))
end

-- flow_next_due(waits, due, qnext): the earliest of due (the first scheduled task's due time, or nil), the time
-- the first key over its rate may start again, and qnext (when the queue's rate allows a start again, or nil).
local function flow_next_due(waits, due, qnext)
  local w = redis.call('ZRANGE', waits, 0, 0, 'WITHSCORES')
  local t = tonumber(w[2])
  if t and (not due or t < due) then due = t end
  if qnext and (not due or qnext < due) then due = qnext end
  return due
end

-- flow_unqueue(ready, env, id): take the waiting task id, whose stored envelope is env, out of its key's
-- FIFO (its key read from env's "flow_key"). O(the key's ready tasks), as LREM on a list. Returns whether it was
-- there.
local function flow_unqueue(fready, env, id)
  local fk = string.match(env, '"flow_key":"([^"]*)"')
  if not fk then return false end
  local ms = redis.call('ZRANGEBYLEX', fready, '[' .. fk .. ' ', '(' .. fk .. '!')
  local tail = #fk + 17
  for _, m in ipairs(ms) do
    if string.sub(m, tail) == id then
      redis.call('ZREM', fready, m)
      return true
    end
  end
  return false
end
